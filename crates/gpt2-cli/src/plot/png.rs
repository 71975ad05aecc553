//! A PNG file from RGB pixels: signature, IHDR, tEXt, one zlib IDAT, IEND (PNG spec, 3rd ed.).
//! Every row uses filter 0 (none): the pictures are flat colour, which deflate's back
//! references already compress well.

use miniz_oxide::deflate::compress_to_vec_zlib;

pub const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// `text` becomes tEXt chunks (keyword, text); both are Latin-1 in PNG, so a character
/// outside it is written as '?' and a NUL, which would end the keyword, likewise.
pub fn encode(width: u32, height: u32, rgb: &[u8], text: &[(&str, String)]) -> Vec<u8> {
    assert_eq!(rgb.len(), 3 * width as usize * height as usize);
    let mut out = SIGNATURE.to_vec();

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);

    for (keyword, value) in text {
        let mut data = latin1(keyword);
        data.push(0);
        data.extend(latin1(value));
        chunk(&mut out, b"tEXt", &data);
    }

    let stride = 3 * width as usize;
    let mut raw = Vec::with_capacity((stride + 1) * height as usize);
    for row in rgb.chunks_exact(stride.max(1)).take(height as usize) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    chunk(&mut out, b"IDAT", &compress_to_vec_zlib(&raw, 6));
    chunk(&mut out, b"IEND", &[]);
    out
}

fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c as u32 {
            1..=0xff => c as u8,
            _ => b'?',
        })
        .collect()
}

/// Length, type, data, and the CRC-32 of type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend(crc.finalize().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniz_oxide::inflate::decompress_to_vec_zlib;

    /// (type, data, stored crc) for each chunk after the signature.
    fn chunks(png: &[u8]) -> Vec<([u8; 4], Vec<u8>, u32)> {
        assert_eq!(png[..8], SIGNATURE);
        let mut v = Vec::new();
        let mut i = 8;
        while i < png.len() {
            let len = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = png[i + 4..i + 8].try_into().unwrap();
            let data = png[i + 8..i + 8 + len].to_vec();
            let crc = u32::from_be_bytes(png[i + 8 + len..i + 12 + len].try_into().unwrap());
            v.push((kind, data, crc));
            i += 12 + len;
        }
        assert_eq!(i, png.len());
        v
    }

    #[test]
    fn iend_has_the_well_known_crc() {
        let mut out = Vec::new();
        chunk(&mut out, b"IEND", &[]);
        assert_eq!(
            out,
            [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]
        );
    }

    #[test]
    fn chunks_carry_their_crc() {
        // CRC-32 (ISO-HDLC) of "123456789" is 0xCBF43926; a chunk's covers type then data.
        let mut h = crc32fast::Hasher::new();
        h.update(b"123456789");
        assert_eq!(h.finalize(), 0xcbf4_3926);
        let png = encode(2, 1, &[1, 2, 3, 4, 5, 6], &[("Title", "x".into())]);
        for (kind, data, crc) in chunks(&png) {
            let mut h = crc32fast::Hasher::new();
            h.update(&kind);
            h.update(&data);
            assert_eq!(h.finalize(), crc, "{}", String::from_utf8_lossy(&kind));
        }
    }

    #[test]
    fn pixels_decode_back() {
        let (w, h) = (5u32, 3u32);
        let rgb: Vec<u8> = (0..3 * w * h).map(|i| (i * 7 % 256) as u8).collect();
        let png = encode(w, h, &rgb, &[]);
        let cs = chunks(&png);
        let kinds: Vec<&[u8]> = cs.iter().map(|c| &c.0[..]).collect();
        assert_eq!(kinds, [&b"IHDR"[..], b"IDAT", b"IEND"]);
        let ihdr = &cs[0].1;
        assert_eq!(ihdr[..8], [0, 0, 0, 5, 0, 0, 0, 3]);
        assert_eq!(ihdr[8..], [8, 2, 0, 0, 0]);
        let raw = decompress_to_vec_zlib(&cs[1].1).expect("a valid zlib stream");
        assert_eq!(raw.len(), (3 * w as usize + 1) * h as usize);
        for (y, row) in raw.chunks_exact(3 * w as usize + 1).enumerate() {
            assert_eq!(row[0], 0, "filter byte");
            let want = &rgb[y * 3 * w as usize..(y + 1) * 3 * w as usize];
            assert_eq!(&row[1..], want);
        }
    }

    #[test]
    fn text_chunks_are_latin1() {
        let png = encode(1, 1, &[0, 0, 0], &[("Title", "café 中\0!".into())]);
        let (kind, data, _) = &chunks(&png)[1];
        assert_eq!(kind, b"tEXt");
        assert_eq!(data, b"Title\0caf\xe9 ??!".as_slice());
    }
}
