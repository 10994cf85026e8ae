//! Every fuzz seed and every input a fuzzer ever crashed on, run through the same entry
//! points the fuzz targets in `fuzz/` call: what once broke stays fixed. Inputs live in
//! `fuzz/seeds/TARGET/` and `tests/fuzz_inputs/TARGET/` (crash files go there).

mod common;

use std::path::Path;

use common::{OP_CLOSE, OP_TEXT, client_frame, unmasked_frame};
use scanstream::fuzz_api;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for dir in [
        root.join("fuzz/seeds").join(target),
        root.join("tests/fuzz_inputs").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            eprintln!("{target}: {}", path.display());
            run(&data);
            count += 1;
        }
    }
    assert!(count > 0, "no inputs for {target}");
}

#[test]
fn http_head() {
    replay("http_head", fuzz_api::http_head);
}

#[test]
fn connection() {
    replay("connection", fuzz_api::connection);
}

#[test]
fn connection_tls() {
    replay("connection_tls", fuzz_api::connection_tls);
}

#[test]
fn client_message() {
    replay("client_message", fuzz_api::client_message);
}

#[test]
fn csv_rows() {
    replay("csv_rows", fuzz_api::csv_file);
}

#[test]
fn jsonl_line() {
    replay("jsonl_line", fuzz_api::jsonl_line);
}

#[test]
fn config_file() {
    replay("config_file", fuzz_api::config_file);
}

#[test]
fn scan_expression() {
    replay("scan_expression", fuzz_api::scan_expression);
}

/// The connection checker must itself be able to fail, or the connection target proves
/// nothing.
#[test]
fn the_connection_checker_rejects_what_a_server_must_not_send() {
    let ok = b"HTTP/1.1 404 Not Found\r\nContent-Length: 35\r\n\r\n{\"code\":\"not_found\",\"message\":\"no\"}";
    assert_eq!(fuzz_api::check_server_bytes(ok), Ok(()));
    // After the upgrade, the frames given, as a server would send them.
    let upgraded = |frames: &[Vec<u8>]| {
        let mut bytes = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        frames.iter().for_each(|f| bytes.extend_from_slice(f));
        bytes
    };
    let close = |code: u16| unmasked_frame(OP_CLOSE, &code.to_be_bytes());
    assert_eq!(
        fuzz_api::check_server_bytes(&upgraded(&[unmasked_frame(OP_TEXT, br#"{"type":"x"}"#)])),
        Ok(())
    );
    assert_eq!(
        fuzz_api::check_server_bytes(&upgraded(&[close(1000)])),
        Ok(())
    );
    let mut reserved_bit = unmasked_frame(OP_TEXT, b"");
    reserved_bit[0] |= 0x40; // RSV1, with no extension negotiated
    let bad: [(&[u8], &str); 7] = [
        (b"HTTP/1.1 200 OK\r\n\r\nhello", "Content-Length"),
        (b"garbage\r\n\r\n", "not an HTTP response"),
        (&upgraded(&[client_frame(OP_TEXT, b"hello")]), "masked"),
        (
            &upgraded(&[unmasked_frame(OP_TEXT, b"hello")]),
            "text frame",
        ),
        (&upgraded(&[close(1005)]), "close code 1005"),
        (
            &upgraded(&[close(1000), unmasked_frame(OP_TEXT, b"")]),
            "after the close",
        ),
        (&upgraded(&[reserved_bit]), "reserved bits"),
    ];
    for (bytes, why) in bad {
        let err = fuzz_api::check_server_bytes(bytes).unwrap_err();
        assert!(err.contains(why), "{err} should say {why}");
    }
}

/// The same for the TLS target's checker: plaintext on the TLS port, or a record no TLS
/// stack sends, fails it.
#[test]
fn the_tls_checker_rejects_plaintext_and_bad_records() {
    let alert = [21, 3, 3, 0, 2, 2, 50];
    assert_eq!(fuzz_api::check_tls_records(&alert), Ok(()));
    assert_eq!(fuzz_api::check_tls_records(&alert[..4]), Ok(()), "cut off");
    let bad: [(&[u8], &str); 3] = [
        (b"HTTP/1.1 400 Bad Request\r\n", "not a TLS record"),
        (&[22, 2, 0, 0, 0], "record version"),
        (&[23, 3, 3, 0xFF, 0xFF], "a record of"),
    ];
    for (bytes, why) in bad {
        let err = fuzz_api::check_tls_records(bytes).unwrap_err();
        assert!(err.contains(why), "{err} should say {why}");
    }
}
