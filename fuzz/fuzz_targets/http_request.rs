//! Arbitrary bytes as an HTTP request head: never a panic; a parsed head never claims more
//! bytes than it was given; a head over the limit is refused, not waited on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_core::web::http::{HttpError, parse_head};

const MAX: usize = 2048;

fuzz_target!(|data: &[u8]| {
    match parse_head(data, MAX) {
        Ok(Some((head, n))) => {
            assert!(n <= data.len() && n <= MAX);
            assert!(head.path.starts_with('/'));
            let _ = head.content_length();
            let _ = head.cookie("switchboard_session");
        }
        Ok(None) => assert!(data.len() < MAX, "a full-size head must be decided"),
        Err(HttpError::HeaderTooLarge) => {}
        Err(e) => {
            let (code, _) = e.status();
            assert!((400..600).contains(&code));
        }
    }
});
