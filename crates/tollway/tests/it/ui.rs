//! The admin UI's files: served without a key (they hold no data), with headers that keep the
//! page to itself, nothing fetched from elsewhere, and off with `server.admin_ui: false`. What the
//! page does in a browser is tested by `tests/conformance/test_admin_ui.py`.

use serde_json::Value;

use crate::harness::{config_text, header, start, start_with, MASTER};

#[tokio::test]
async fn the_admin_ui_is_served_self_contained_and_can_be_turned_off() {
    let env = start().await;
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
    ] {
        let r = http
            .get(format!("{}{path}", env.url))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let h = r.headers().clone();
        assert_eq!(header(&h, "content-type"), kind);
        let csp = header(&h, "content-security-policy");
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(rule), "{path}: {csp}");
        }
        assert_eq!(header(&h, "x-content-type-options"), "nosniff");
        assert_eq!(header(&h, "x-frame-options"), "DENY");
        assert_eq!(header(&h, "referrer-policy"), "no-referrer");
        let body = r.text().await.expect("text");
        assert!(!body.contains(MASTER), "{path} holds no secret");
        // nothing from elsewhere: the only absolute URL is SVG's namespace name
        let without_svg = body.replace("http://www.w3.org/2000/svg", "");
        assert!(!without_svg.contains("://"), "{path} names another origin");
    }
    // the page's data is the admin API's, behind the master key
    let r = http
        .get(format!("{}/admin/health", env.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 401);

    let off = start_with(|mock| {
        config_text(mock).replacen("server:\n", "server:\n  admin_ui: false\n", 1)
    })
    .await;
    for path in ["/ui", "/ui/app.js"] {
        let r = http
            .get(format!("{}{path}", off.url))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status().as_u16(), 404);
        let v: Value = r.json().await.expect("json");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("admin_ui: false")),
            "{v}"
        );
    }
}
