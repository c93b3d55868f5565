//! The `.npy` format (version 1.0, C order; little-endian float32 for sensor arrays, uint8 for
//! video frames) for arrays in shards, so Python's `webdataset` / `numpy.load` read them as they
//! are.

/// An array in `.npy` form: `descr` is numpy's type string (`<f4`, `|u1`), `body` the values'
/// bytes in C order.
fn write(descr: &str, shape: &[usize], body: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + body.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

pub fn write_f32(data: &[f32], shape: &[usize]) -> Vec<u8> {
    let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write("<f4", shape, &body)
}

/// A uint8 array (video frames: [T, H, W, 3]).
pub fn write_u8(data: &[u8], shape: &[usize]) -> Vec<u8> {
    write("|u1", shape, data)
}

/// The shape and data bytes of an `.npy` array whose type is one of `descrs` (numpy writes a
/// byte type as `|u1`; `<u1` and `u1` mean the same).
fn read<'a>(
    bytes: &'a [u8],
    descrs: &[&str],
    what: &str,
    size: usize,
) -> Result<(&'a [u8], Vec<usize>), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an .npy array (bad magic)".into());
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(start..start + hlen)
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "non-UTF-8 .npy header")?;
    if !descrs
        .iter()
        .any(|d| header.contains(&format!("'descr': '{d}'")))
    {
        return Err(format!(
            "expected {what} ('{}'), header is {}",
            descrs[0],
            header.trim()
        ));
    }
    if header.contains("'fortran_order': True") {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape_s = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or("no shape in .npy header")?;
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape {shape_s:?}"))
        })
        .collect::<Result<_, _>>()?;
    let n = shape
        .iter()
        .try_fold(size, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    let body = &bytes[start + hlen..];
    if body.len() != n {
        return Err(format!(
            "shape {shape:?} needs {n} bytes of data, found {} (truncated?)",
            body.len()
        ));
    }
    Ok((body, shape))
}

/// Reads a little-endian float32 array; returns the values and the shape.
pub fn read_f32(bytes: &[u8]) -> Result<(Vec<f32>, Vec<usize>), String> {
    let (body, shape) = read(bytes, &["<f4"], "float32 little-endian", 4)?;
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((data, shape))
}

/// Reads a uint8 array; returns the values and the shape.
pub fn read_u8(bytes: &[u8]) -> Result<(Vec<u8>, Vec<usize>), String> {
    let (body, shape) = read_u8_in_place(bytes)?;
    Ok((body.to_vec(), shape))
}

/// A uint8 array's values (borrowed from `bytes`, nothing copied) and shape.
pub fn read_u8_in_place(bytes: &[u8]) -> Result<(&[u8], Vec<usize>), String> {
    read(bytes, &["|u1", "<u1", "u1"], "uint8", 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let v: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        let b = super::write_f32(&v, &[3, 4]);
        assert_eq!(
            (b.len() - v.len() * 4) % 64,
            0,
            "header aligned to 64 bytes"
        );
        let (w, s) = super::read_f32(&b).unwrap();
        assert_eq!((w, s), (v, vec![3, 4]));
        assert!(
            super::read_f32(&b[..b.len() - 1])
                .unwrap_err()
                .contains("truncated")
        );
    }

    #[test]
    fn bytes_round_trip_and_types_are_checked() {
        let v: Vec<u8> = (0..2 * 3 * 4 * 3).map(|i| i as u8).collect();
        let b = super::write_u8(&v, &[2, 3, 4, 3]);
        assert_eq!((b.len() - v.len()) % 64, 0);
        assert!(String::from_utf8_lossy(&b[..64]).contains("'descr': '|u1'"));
        assert_eq!(super::read_u8(&b).unwrap(), (v, vec![2, 3, 4, 3]));
        assert!(
            super::read_u8(&b[..b.len() - 5])
                .unwrap_err()
                .contains("truncated")
        );
        assert!(super::read_f32(&b).unwrap_err().contains("float32"));
        let f = super::write_f32(&[1.0, 2.0], &[2]);
        assert!(super::read_u8(&f).unwrap_err().contains("uint8"));
        // A header claiming more than memory holds is an error, not an overflow.
        let huge = super::write_u8(&[], &[usize::MAX / 2, 4, 1, 3]);
        assert!(super::read_u8(&huge).unwrap_err().contains("too large"));
    }
}
