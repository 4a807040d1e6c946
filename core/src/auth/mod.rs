//! Authentication building blocks that are pure: TOTP (RFC 6238) for user logins.

pub mod totp;
