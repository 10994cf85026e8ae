#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| scanstream::fuzz_api::scan_expression(data));
