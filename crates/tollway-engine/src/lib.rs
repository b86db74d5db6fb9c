//! The gateway's logic that does no IO: the price table and exact costs (`prices`), and the
//! lexical learned router (`router`).

pub mod prices;
pub mod router;
