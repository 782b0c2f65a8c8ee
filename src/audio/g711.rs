//! G.711 μ-law and A-law companding, table driven and bit-exact with the ITU-T G.191
//! reference (`ulaw_compress`/`ulaw_expand`, `alaw_compress`/`alaw_expand`).
//!
//! All four tables are built at compile time by `const fn`s:
//! - μ-law encode depends only on `sample >> 2` (14-bit; G.191 takes the one's complement of
//!   negative samples, so −1 encodes as `0x7F`, "−0"): 16 384 entries.
//! - A-law encode depends only on `sample >> 3` (13-bit): 8 192 entries.
//! - Both decoders are 256-entry tables.
//!
//! The tables are indexed by the unsigned bit pattern of the shifted sample, so lookups need no
//! bounds checks and no branch. Decoded ranges: μ-law ±32 124, A-law ±32 256. No zero trap.

/// μ-law encode table, indexed by the 14-bit two's-complement pattern of `sample >> 2`.
static MULAW_ENC: [u8; 1 << 14] = build_mulaw_enc();
/// A-law encode table, indexed by the 13-bit two's-complement pattern of `sample >> 3`.
static ALAW_ENC: [u8; 1 << 13] = build_alaw_enc();
/// μ-law decode table (code → linear sample).
static MULAW_DEC: [i16; 256] = build_mulaw_dec();
/// A-law decode table (code → linear sample).
static ALAW_DEC: [i16; 256] = build_alaw_dec();

/// Number of significant bits in `v` (0 for 0).
const fn bit_len(v: u32) -> u32 {
    32 - v.leading_zeros()
}

const fn build_mulaw_enc() -> [u8; 1 << 14] {
    let mut table = [0u8; 1 << 14];
    let mut i = 0usize;
    while i < (1 << 14) {
        // Sign-extend the 14-bit index back to `sample >> 2`.
        let p: i32 = if i >= (1 << 13) {
            i as i32 - (1 << 14)
        } else {
            i as i32
        };
        let positive = p >= 0;
        // One's complement for negatives (G.191): (~s) >> 2 == !(s >> 2) == -p - 1.
        let mag = if positive { p } else { -p - 1 };
        let mut absno = (mag + 33) as u32;
        if absno > 0x1FFF {
            absno = 0x1FFF;
        }
        // Segment number 1..=8: the bit length of absno >> 6, plus one.
        let segno = bit_len(absno >> 6) + 1;
        let high = 8 - segno;
        let low = 0x0F - ((absno >> segno) & 0x0F);
        let mut code = (high << 4) | low;
        if positive {
            code |= 0x80;
        }
        table[i] = code as u8;
        i += 1;
    }
    table
}

const fn build_alaw_enc() -> [u8; 1 << 13] {
    let mut table = [0u8; 1 << 13];
    let mut i = 0usize;
    while i < (1 << 13) {
        // Sign-extend the 13-bit index back to `sample >> 3`.
        let q: i32 = if i >= (1 << 12) {
            i as i32 - (1 << 13)
        } else {
            i as i32
        };
        let positive = q >= 0;
        // G.191 works on the 12-bit magnitude `sample >> 4`, one's complement for negatives.
        let ix = (if positive { q >> 1 } else { (!q) >> 1 }) as u32; // 0..=2047
        let mut code = if ix <= 15 {
            ix
        } else {
            let exp = bit_len(ix) - 4; // 1..=7
            (exp << 4) | ((ix >> (exp - 1)) & 0x0F)
        };
        if positive {
            code |= 0x80;
        }
        table[i] = (code ^ 0x55) as u8;
        i += 1;
    }
    table
}

const fn build_mulaw_dec() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0usize;
    while code < 256 {
        let b = !(code as u8);
        let e = ((b >> 4) & 0x07) as i32;
        let m = (b & 0x0F) as i32;
        let mag = (((m << 3) + 132) << e) - 132;
        table[code] = if b & 0x80 != 0 { -mag } else { mag } as i16;
        code += 1;
    }
    table
}

const fn build_alaw_dec() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0usize;
    while code < 256 {
        let a = (code as u8) ^ 0x55;
        let seg = ((a & 0x70) >> 4) as i32;
        let mut t = ((a & 0x0F) as i32) << 4;
        t = match seg {
            0 => t + 8,
            1 => t + 0x108,
            _ => (t + 0x108) << (seg - 1),
        };
        table[code] = if a & 0x80 != 0 { t } else { -t } as i16;
        code += 1;
    }
    table
}

/// Encodes one 16-bit linear sample to a μ-law byte (G.191 `ulaw_compress`; `encode(0) = 0xFF`).
#[inline]
pub fn mulaw_encode(sample: i16) -> u8 {
    MULAW_ENC[((sample as u16) >> 2) as usize]
}

/// Decodes one μ-law byte to a 16-bit linear sample (G.191 `ulaw_expand`; range ±32 124).
#[inline]
pub fn mulaw_decode(code: u8) -> i16 {
    MULAW_DEC[code as usize]
}

/// Encodes one 16-bit linear sample to an A-law byte (G.191 `alaw_compress`; `encode(0) = 0xD5`).
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    ALAW_ENC[((sample as u16) >> 3) as usize]
}

/// Decodes one A-law byte to a 16-bit linear sample (G.191 `alaw_expand`; range ±32 256).
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DEC[code as usize]
}

/// Decodes μ-law bytes, appending one sample per byte to `out`.
pub fn decode_mulaw_into(codes: &[u8], out: &mut Vec<i16>) {
    out.extend(codes.iter().map(|&c| mulaw_decode(c)));
}

/// Encodes samples to μ-law, appending one byte per sample to `out`.
pub fn encode_mulaw_into(pcm: &[i16], out: &mut Vec<u8>) {
    out.extend(pcm.iter().map(|&s| mulaw_encode(s)));
}

/// Decodes A-law bytes, appending one sample per byte to `out`.
pub fn decode_alaw_into(codes: &[u8], out: &mut Vec<i16>) {
    out.extend(codes.iter().map(|&c| alaw_decode(c)));
}

/// Encodes samples to A-law, appending one byte per sample to `out`.
pub fn encode_alaw_into(pcm: &[i16], out: &mut Vec<u8>) {
    out.extend(pcm.iter().map(|&s| alaw_encode(s)));
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- Independent reference: a line-by-line port of ITU-T G.191 g711.c (loops, no tables),
    // on 16-bit values exactly as the C code computes them on `short`.

    fn ref_ulaw_compress(x: i16) -> u8 {
        let x = x as i32;
        let mut absno = if x < 0 {
            ((!x) >> 2) + 33
        } else {
            (x >> 2) + 33
        };
        if absno > 0x1FFF {
            absno = 0x1FFF;
        }
        let mut i = absno >> 6;
        let mut segno = 1;
        while i != 0 {
            segno += 1;
            i >>= 1;
        }
        let high_nibble = 0x0008 - segno;
        let mut low_nibble = (absno >> segno) & 0x000F;
        low_nibble = 0x000F - low_nibble;
        let mut out = (high_nibble << 4) | low_nibble;
        if x >= 0 {
            out |= 0x0080;
        }
        out as u8
    }

    fn ref_ulaw_expand(code: u8) -> i16 {
        let log = code as i32;
        let sign = if log < 0x0080 { -1 } else { 1 };
        let mut mantissa = !log;
        let exponent = (mantissa >> 4) & 0x0007;
        let segment = exponent + 1;
        mantissa &= 0x000F;
        let step = 4 << segment;
        (sign * ((0x0080 << exponent) + step * mantissa + step / 2 - 4 * 33)) as i16
    }

    fn ref_alaw_compress(x: i16) -> u8 {
        let x = x as i32;
        let mut ix = if x < 0 { (!x) >> 4 } else { x >> 4 };
        if ix > 15 {
            let mut iexp = 1;
            while ix > 16 + 15 {
                ix >>= 1;
                iexp += 1;
            }
            ix -= 16;
            ix += iexp << 4;
        }
        if x >= 0 {
            ix |= 0x0080;
        }
        (ix ^ 0x0055) as u8
    }

    fn ref_alaw_expand(code: u8) -> i16 {
        let log = code as i32;
        let mut ix = log ^ 0x0055;
        ix &= 0x007F;
        let iexp = ix >> 4;
        let mut mant = ix & 0x000F;
        if iexp > 0 {
            mant += 16;
        }
        mant = (mant << 4) + 0x0008;
        if iexp > 1 {
            mant <<= iexp - 1;
        }
        (if log > 127 { mant } else { -mant }) as i16
    }

    #[test]
    fn mulaw_encode_matches_g191_for_all_inputs() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(mulaw_encode(s), ref_ulaw_compress(s), "sample {s}");
        }
    }

    #[test]
    fn alaw_encode_matches_g191_for_all_inputs() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(alaw_encode(s), ref_alaw_compress(s), "sample {s}");
        }
    }

    #[test]
    fn decoders_match_g191_for_all_codes() {
        for c in 0..=255u8 {
            assert_eq!(mulaw_decode(c), ref_ulaw_expand(c), "mulaw code {c:#04x}");
            assert_eq!(alaw_decode(c), ref_alaw_expand(c), "alaw code {c:#04x}");
        }
    }

    #[test]
    fn key_codes_from_spec() {
        assert_eq!(mulaw_decode(0xFF), 0);
        assert_eq!(mulaw_decode(0x7F), 0);
        assert_eq!(mulaw_decode(0xFE), 8);
        assert_eq!(mulaw_decode(0x80), 32124);
        assert_eq!(mulaw_decode(0x81), 31100);
        assert_eq!(mulaw_decode(0x00), -32124);
        assert_eq!(mulaw_decode(0x02), -30076);
        assert_eq!(mulaw_encode(0), 0xFF);
        assert_eq!(mulaw_encode(-1), 0x7F);
        assert_eq!(mulaw_encode(i16::MAX), 0x80);
        assert_eq!(mulaw_encode(31612), 0x80);
        assert_eq!(mulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_decode(alaw_encode(i16::MAX)), 32256);
        assert_eq!(alaw_decode(alaw_encode(i16::MIN)), -32256);
        // Every input ≥ +31 612 clips to the top μ-law code.
        assert!((31612..=i16::MAX).all(|s| mulaw_encode(s) == 0x80));
        assert_eq!(mulaw_encode(31611), 0x81);
    }

    #[test]
    fn decode_encode_decode_is_stable_for_all_codes() {
        for c in 0..=255u8 {
            let v = mulaw_decode(c);
            assert_eq!(mulaw_decode(mulaw_encode(v)), v, "mulaw code {c:#04x}");
            let v = alaw_decode(c);
            assert_eq!(alaw_decode(alaw_encode(v)), v, "alaw code {c:#04x}");
        }
        // Codes other than −0 (0x7F) re-encode to themselves.
        for c in 0..=255u8 {
            if c != 0x7F {
                assert_eq!(mulaw_encode(mulaw_decode(c)), c, "mulaw code {c:#04x}");
            }
            assert_eq!(alaw_encode(alaw_decode(c)), c, "alaw code {c:#04x}");
        }
    }

    /// Round-trip error never exceeds half a quantisation step of the sample's segment
    /// (plus the 16-bit → 14/13-bit truncation), and clipping only happens above the top level.
    #[test]
    fn round_trip_error_bounded_per_segment() {
        let mut max_mu = 0i32;
        let mut max_a = 0i32;
        for s in i16::MIN..=i16::MAX {
            let x = s as i32;
            // μ-law: segment e has step 8·2^e in the 16-bit domain.
            let code = mulaw_encode(s);
            let e = ((!code >> 4) & 7) as i32;
            let step = 8 << e;
            let err = (mulaw_decode(code) as i32 - x).abs();
            if x.abs() <= 32124 {
                assert!(err <= step / 2 + 4, "mulaw {s}: err {err} step {step}");
            }
            max_mu = max_mu.max(if x.abs() <= 32635 { err } else { 0 });
            // A-law: segments 0 and 1 step 16, then 16·2^(seg-1).
            let code = alaw_encode(s);
            let seg = (((code ^ 0x55) >> 4) & 7) as i32;
            let step = if seg <= 1 { 16 } else { 16 << (seg - 1) };
            let err = (alaw_decode(code) as i32 - x).abs();
            if x.abs() <= 32256 {
                assert!(err <= step / 2 + 1, "alaw {s}: err {err} step {step}");
            }
            max_a = max_a.max(if x.abs() <= 32256 { err } else { 0 });
        }
        assert!(max_mu <= 644, "max mulaw error {max_mu}");
        assert!(max_a <= 512, "max alaw error {max_a}");
    }

    #[test]
    fn decoded_ranges() {
        let mu: Vec<i16> = (0..=255u8).map(mulaw_decode).collect();
        let a: Vec<i16> = (0..=255u8).map(alaw_decode).collect();
        assert_eq!(mu.iter().max(), Some(&32124));
        assert_eq!(mu.iter().min(), Some(&-32124));
        assert_eq!(a.iter().max(), Some(&32256));
        assert_eq!(a.iter().min(), Some(&-32256));
    }

    #[test]
    fn into_functions_append() {
        let pcm = [0i16, 8, -8, i16::MAX, i16::MIN, 1000];
        let mut codes = vec![0xAA];
        encode_mulaw_into(&pcm, &mut codes);
        assert_eq!(codes.len(), 7);
        assert_eq!(codes[0], 0xAA);
        let mut back = vec![42i16];
        decode_mulaw_into(&codes[1..], &mut back);
        assert_eq!(back[0], 42);
        assert_eq!(back[1..].len(), pcm.len());
        for (i, &s) in pcm.iter().enumerate() {
            assert_eq!(back[i + 1], mulaw_decode(mulaw_encode(s)));
        }
        let mut codes = Vec::new();
        encode_alaw_into(&pcm, &mut codes);
        let mut back = Vec::new();
        decode_alaw_into(&codes, &mut back);
        for (i, &s) in pcm.iter().enumerate() {
            assert_eq!(back[i], alaw_decode(alaw_encode(s)));
        }
        let mut empty = Vec::new();
        encode_alaw_into(&[], &mut empty);
        decode_mulaw_into(&[], &mut back);
        assert!(empty.is_empty());
        assert_eq!(back.len(), pcm.len());
    }
}
