//! What every request passes before a handler sees it: the page guard (Host, Origin,
//! Sec-Fetch-Site, body types), the API and admin keys, and the per-client limit.

pub mod access;
pub mod clients;
pub mod origin;
