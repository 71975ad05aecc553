//! GPT-2's reversible map between bytes and printable characters (`bytes_to_unicode` in
//! OpenAI's encoder.py): vocabulary entries are strings over these 256 characters, one per byte,
//! so that no token holds whitespace or control characters.

const fn is_printable(b: usize) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The character that stands for each byte in vocabulary strings.
pub(crate) const BYTE_TO_CHAR: [char; 256] = {
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    let mut b = 0;
    while b < 256 {
        // Printable Latin-1 bytes stand for themselves; the rest take code points from U+0100
        // on, in byte order.
        let cp = if is_printable(b) {
            b as u32
        } else {
            shifted += 1;
            255 + shifted
        };
        table[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => panic!("not a scalar value"),
        };
        b += 1;
    }
    table
};

/// The inverse of [`BYTE_TO_CHAR`] over U+0000..U+0143 (-1 where no byte maps there).
const CHAR_TO_BYTE: [i16; 0x144] = {
    let mut table = [-1i16; 0x144];
    let mut b = 0;
    while b < 256 {
        table[BYTE_TO_CHAR[b] as usize] = b as i16;
        b += 1;
    }
    table
};

/// The byte a vocabulary character stands for, if it is one of the 256.
#[inline]
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    match CHAR_TO_BYTE.get(c as usize) {
        Some(&b) if b >= 0 => Some(b as u8),
        _ => None,
    }
}

/// What `tokenizers`' ByteLevel decoder produces for one token, appended to `out`: its
/// byte-alphabet bytes, or, when any character is outside the alphabet (an added token such as
/// "<pad> x"), its raw UTF-8. Says whether it was spelled in the alphabet.
pub(crate) fn push_decoded(token: &str, out: &mut Vec<u8>) -> bool {
    let len = out.len();
    for c in token.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.truncate(len);
                out.extend_from_slice(token.as_bytes());
                return false;
            }
        }
    }
    true
}

/// The vocabulary spelling of raw bytes.
pub(crate) fn bytes_to_token(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| BYTE_TO_CHAR[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_encoder_py() {
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[b'A' as usize], 'A');
        assert_eq!(BYTE_TO_CHAR[0xAD], 'Ń');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(BYTE_TO_CHAR[b as usize]), Some(b));
        }
        let mut chars: Vec<char> = BYTE_TO_CHAR.to_vec();
        chars.sort();
        chars.dedup();
        assert_eq!(chars.len(), 256);
    }
}
