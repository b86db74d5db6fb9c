//! The gateway's logic that does no IO: for now the price table and exact costs (`prices`).

pub mod prices;
