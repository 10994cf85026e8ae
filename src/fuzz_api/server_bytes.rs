//! The oracle of the connection targets: what a server may send back, whatever it was
//! sent. Pure functions over the bytes a client received; they never touch a socket.

/// What a server may send: HTTP responses (each with `Content-Length`), and after a
/// `101` only unmasked, well-formed frames, ending with a close frame or not at all. The
/// server may stop anywhere once the client has gone, so a cut-off last response or
/// frame is accepted.
pub fn check_server_bytes(mut out: &[u8]) -> Result<(), String> {
    while !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut res = httparse::Response::new(&mut headers);
        let head = match res.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(()),
            Err(e) => return Err(format!("not an HTTP response: {e}")),
        };
        let status = res.code.unwrap_or(0);
        if status == 101 {
            return check_frames(&out[head..]);
        }
        if !(200..600).contains(&status) {
            return Err(format!("status {status}"));
        }
        let len = res
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
            .ok_or("a response without Content-Length")?;
        if status >= 400 {
            let body = out.get(head..head + len).unwrap_or(&out[head..]);
            if body.len() == len {
                let v: serde_json::Value =
                    serde_json::from_slice(body).map_err(|e| format!("error body: {e}"))?;
                if !v["code"].is_string() || !v["message"].is_string() {
                    return Err(format!("error body without code and message: {v}"));
                }
            }
        }
        out = out.get(head + len..).unwrap_or_default();
    }
    Ok(())
}

fn check_frames(mut out: &[u8]) -> Result<(), String> {
    while out.len() >= 2 {
        let (b0, b1) = (out[0], out[1]);
        if b0 & 0x70 != 0 {
            return Err(format!("reserved bits set: {b0:#04x}"));
        }
        if b1 & 0x80 != 0 {
            return Err("a masked server frame".to_owned());
        }
        let opcode = b0 & 0x0F;
        let (len, at): (usize, usize) = match b1 & 0x7F {
            126 if out.len() >= 4 => (usize::from(u16::from_be_bytes([out[2], out[3]])), 4),
            127 if out.len() >= 10 => {
                let mut n = [0; 8];
                n.copy_from_slice(&out[2..10]);
                (
                    usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX),
                    10,
                )
            }
            126 | 127 => return Ok(()),
            n => (usize::from(n), 2),
        };
        let Some(payload) = out.get(at..at.saturating_add(len)) else {
            return Ok(()); // cut off
        };
        match opcode {
            0x1 if b0 & 0x80 != 0 => {
                let text = std::str::from_utf8(payload).map_err(|e| format!("text frame: {e}"))?;
                let v: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| format!("text frame: {e}: {text}"))?;
                if !v["type"].is_string() {
                    return Err(format!("a message without a type: {text}"));
                }
            }
            0x8 => {
                if len == 1 || len > 125 {
                    return Err(format!("close frame of {len} bytes"));
                }
                if len >= 2 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
                    if !valid {
                        return Err(format!("close code {code}"));
                    }
                    std::str::from_utf8(&payload[2..]).map_err(|e| format!("close reason: {e}"))?;
                }
                if out.len() > at + len {
                    return Err("bytes after the close frame".to_owned());
                }
            }
            0x9 | 0xA if len > 125 || b0 & 0x80 == 0 => {
                return Err("a fragmented or long control frame".to_owned());
            }
            0x9 | 0xA => {}
            _ => return Err(format!("opcode {opcode:#x} from the server")),
        }
        out = &out[at + len..];
    }
    Ok(())
}

/// What a TLS server may send a client that never completed a handshake: TLS records
/// (RFC 8446 section 5.1), the last perhaps cut off, and never plaintext such as an HTTP
/// answer.
pub fn check_tls_records(mut out: &[u8]) -> Result<(), String> {
    // "The length MUST NOT exceed 2^14 + 256 bytes" in TLS 1.3 (RFC 8446 section 5.2);
    // TLS 1.2 allows 2^14 + 2048 (RFC 5246 section 6.2.3).
    const MAX_RECORD: usize = (1 << 14) + 2048;
    while let Some(&kind) = out.first() {
        // change_cipher_spec, alert, handshake, application_data (TLS 1.3 encrypts its
        // handshake as the latter).
        if !(20..=23).contains(&kind) {
            return Err(format!("not a TLS record: content type {kind}"));
        }
        let Some(header) = out.get(..5) else {
            return Ok(()); // cut off
        };
        if header[1] != 3 {
            return Err(format!("record version {}.{}", header[1], header[2]));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len > MAX_RECORD {
            return Err(format!("a record of {len} bytes"));
        }
        out = out.get(5 + len..).unwrap_or_default();
    }
    Ok(())
}
