//! 8-bit and 4-bit group-wise quantized matrices and their products.
//!
//! A matrix `[n, k]` (`[out, in]`, as the decode kernels keep every weight) is cut along `k`
//! into groups of 32; each group keeps one f16 scale and 32 small integers:
//! - q8: `w = d * q`, `q` in -127..=127, `d = max|w| / 127` (1.0625 bytes per weight);
//! - q4: `w = d * (q - 8)`, `q` in 0..=15, `d = m / -8` where `m` is the group's value of largest
//!   magnitude, so it is represented exactly (0.5625 bytes per weight).
//!
//! Products quantize the input rows the same way to 8 bits per group of 32 and sum integer
//! products, one scale multiply per group. [`qlinear_reference`] is that arithmetic one
//! element at a time; [`QMatrix::dequantize`] gives the f32 matrix the quantized one stands for.
//!
//! In memory the integers are packed for the byte dot-product instructions (VNNI's vpdpbusd:
//! per 32-bit lane, four unsigned bytes times four signed bytes, summed): rows go in blocks of
//! 16, one per lane of a 512-bit register, and each lane holds four consecutive columns of its
//! row. One instruction then takes 64 weight bytes against four input bytes broadcast to every
//! lane and advances 16 outputs, so a decode step does about one instruction per 30 weight
//! bytes and no horizontal sums (row-major groups took ~7 instructions per 32 bytes and per row,
//! and ran out of instruction slots before memory). The same layout serves several input rows
//! (batches, prompts): each weight register is used once per row.
//! - q8, per block and group, 512 bytes: `[chunk 0..8][lane 0..16][4 columns]`, each byte
//!   `q + 128` (unsigned, as vpdpbusd's first operand wants);
//! - q4, 256 bytes: `[chunk pair 0..4][lane][4 columns]`, the even chunk in the low nibbles and
//!   the odd one in the high nibbles (one load, a mask and a shift give two chunks);
//! - scales, per block and group: the 16 rows' f16 scales, side by side.
//!
//! The unsigned bytes sum to `q x + offset x`: each group's accumulator starts at
//! `-offset * sum(x)` instead of zero. Rows past `n` (padding to a whole block) are zero with
//! scale zero. Checkpoints keep the plain row-major layout ([`QMatrix::row_major`]); packing
//! at load is a byte shuffle.

use std::ops::Range;

use half::f16;
use rayon::prelude::*;

use super::matvec::{with_simd, OutPtr, Simd};

/// Weights per group (one scale each).
pub const GROUP: usize = 32;

/// Output rows per packed block: the lanes of a 512-bit register.
pub const BLOCK_ROWS: usize = 16;

/// Columns per lane per instruction (vpdpbusd sums four byte products per lane).
const QUAD: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantKind {
    Q8,
    Q4,
}

impl QuantKind {
    pub fn name(self) -> &'static str {
        match self {
            QuantKind::Q8 => "q8",
            QuantKind::Q4 => "q4",
        }
    }

    /// Bytes of quantized data per group of one row.
    fn group_bytes(self) -> usize {
        match self {
            QuantKind::Q8 => GROUP,
            QuantKind::Q4 => GROUP / 2,
        }
    }

    /// Bytes per group of a packed block of 16 rows.
    fn block_group_bytes(self) -> usize {
        BLOCK_ROWS * self.group_bytes()
    }

    /// What the stored unsigned integers add to the signed values.
    fn offset(self) -> i32 {
        match self {
            QuantKind::Q8 => 128,
            QuantKind::Q4 => 8,
        }
    }

    /// The signed values' range.
    fn range(self) -> (f32, f32) {
        match self {
            QuantKind::Q8 => (-127.0, 127.0),
            QuantKind::Q4 => (-8.0, 7.0),
        }
    }
}

/// A quantized `[n, k]` matrix, packed in blocks of 16 rows (see the module's notes); rows
/// padded with zeros to a whole number of groups, and with zero rows to a whole block.
#[derive(Clone)]
pub struct QMatrix {
    pub kind: QuantKind,
    pub n: usize,
    pub k: usize,
    /// Per block, per group, `kind.block_group_bytes()` bytes, from `start` on.
    buf: Vec<u8>,
    /// Where the data begins in `buf`: a 64-byte boundary, so every 64-byte load is aligned.
    start: usize,
    /// Per block, per group, 16 scales.
    scales: Vec<f16>,
}

/// Equal when they hold the same numbers (wherever each buffer's alignment put them).
impl PartialEq for QMatrix {
    fn eq(&self, other: &QMatrix) -> bool {
        (self.kind, self.n, self.k) == (other.kind, other.n, other.k)
            && self.packed() == other.packed()
            && self.scales == other.scales
    }
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QMatrix")
            .field("kind", &self.kind)
            .field("n", &self.n)
            .field("k", &self.k)
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// Where column `i` of a row in lane `lane` sits within its block's group: byte offset, and
/// for q4 the shift of its nibble.
#[inline]
fn packed_at(kind: QuantKind, lane: usize, t: usize) -> (usize, u32) {
    let (chunk, e) = (t / QUAD, t % QUAD);
    match kind {
        QuantKind::Q8 => (chunk * 64 + lane * QUAD + e, 0),
        QuantKind::Q4 => ((chunk / 2) * 64 + lane * QUAD + e, 4 * (chunk % 2) as u32),
    }
}

/// One row-major group (as a checkpoint stores it) as unsigned integers: q8's i8 bytes plus
/// 128; q4's nibbles (byte t: element t low, element t + 16 high) as they are.
fn unpack_row_group(kind: QuantKind, bytes: &[u8], u: &mut [u8; GROUP]) {
    match kind {
        QuantKind::Q8 => {
            for (o, &b) in u.iter_mut().zip(bytes) {
                *o = b ^ 0x80;
            }
        }
        QuantKind::Q4 => {
            for (t, &b) in bytes.iter().enumerate() {
                u[t] = b & 0x0f;
                u[t + GROUP / 2] = b >> 4;
            }
        }
    }
}

/// The inverse of [`unpack_row_group`].
fn pack_row_group(kind: QuantKind, u: &[u8; GROUP], bytes: &mut [u8]) {
    match kind {
        QuantKind::Q8 => {
            for (o, &v) in bytes.iter_mut().zip(u) {
                *o = v ^ 0x80;
            }
        }
        QuantKind::Q4 => {
            for t in 0..GROUP / 2 {
                bytes[t] = u[t] | (u[t + GROUP / 2] << 4);
            }
        }
    }
}

/// Writes one row's group of unsigned integers into its block's packed group ([`packed_at`]'s
/// places, written out per layout: this runs for every weight at load).
#[inline(always)]
fn scatter(kind: QuantKind, lane: usize, u: &[u8; GROUP], block_group: &mut [u8]) {
    match kind {
        QuantKind::Q8 => {
            for (c, quad) in u.chunks_exact(QUAD).enumerate() {
                block_group[c * 64 + lane * QUAD..][..QUAD].copy_from_slice(quad);
            }
        }
        QuantKind::Q4 => {
            for p in 0..GROUP / (2 * QUAD) {
                let dst = &mut block_group[p * 64 + lane * QUAD..][..QUAD];
                for (e, d) in dst.iter_mut().enumerate() {
                    *d = u[2 * p * QUAD + e] | (u[(2 * p + 1) * QUAD + e] << 4);
                }
            }
        }
    }
}

/// Reads one row's group of unsigned integers out of its block's packed group.
fn gather(kind: QuantKind, lane: usize, block_group: &[u8], u: &mut [u8; GROUP]) {
    for (t, v) in u.iter_mut().enumerate() {
        let (at, shift) = packed_at(kind, lane, t);
        *v = (block_group[at] >> shift) & if kind == QuantKind::Q4 { 0x0f } else { 0xff };
    }
}

impl QMatrix {
    pub fn groups_per_row(&self) -> usize {
        self.k.div_ceil(GROUP)
    }

    /// Blocks of 16 rows.
    pub fn blocks(&self) -> usize {
        self.n.div_ceil(BLOCK_ROWS)
    }

    /// The packed integers (what the kernels stream).
    pub fn packed(&self) -> &[u8] {
        let len = self.blocks() * self.groups_per_row() * self.kind.block_group_bytes();
        &self.buf[self.start..self.start + len]
    }

    /// The packed scales: per block, per group, 16 rows.
    pub fn packed_scales(&self) -> &[f16] {
        &self.scales
    }

    /// Bytes the matrix occupies (what a product reads).
    pub fn bytes(&self) -> usize {
        self.packed().len() + 2 * self.scales.len()
    }

    /// Bytes of quantized data per row of a `[_, k]` matrix of `kind` in the row-major layout
    /// checkpoints keep (padding group included).
    pub fn row_bytes(kind: QuantKind, k: usize) -> usize {
        k.div_ceil(GROUP) * kind.group_bytes()
    }

    /// An empty (all-zero) packed matrix.
    fn zeroed(kind: QuantKind, n: usize, k: usize) -> QMatrix {
        let (groups, blocks) = (k.div_ceil(GROUP), n.div_ceil(BLOCK_ROWS));
        let (buf, start) = aligned_buffer(blocks * groups * kind.block_group_bytes());
        QMatrix {
            kind,
            n,
            k,
            buf,
            start,
            scales: vec![f16::ZERO; blocks * groups * BLOCK_ROWS],
        }
    }

    /// Fills the matrix block by block, across cores: `fill(j, g, u)` gives row j's group g as
    /// unsigned integers and returns its scale.
    fn fill_blocks(&mut self, fill: impl Fn(usize, usize, &mut [u8; GROUP]) -> f16 + Sync) {
        let (kind, n, groups) = (self.kind, self.n, self.groups_per_row());
        let bgb = kind.block_group_bytes();
        let len = self.blocks() * groups * bgb;
        let start = self.start;
        self.buf[start..start + len]
            .par_chunks_mut((groups * bgb).max(1))
            .zip(self.scales.par_chunks_mut((groups * BLOCK_ROWS).max(1)))
            .enumerate()
            .for_each(|(b, (data, scales))| {
                let mut u = [0u8; GROUP];
                for lane in 0..BLOCK_ROWS.min(n - b * BLOCK_ROWS) {
                    let j = b * BLOCK_ROWS + lane;
                    for g in 0..groups {
                        scales[g * BLOCK_ROWS + lane] = fill(j, g, &mut u);
                        scatter(kind, lane, &u, &mut data[g * bgb..(g + 1) * bgb]);
                    }
                }
            });
    }

    /// A matrix from its parts as a checkpoint stores them (row-major: per row, its groups'
    /// bytes; per row, its groups' scales); None when the sizes do not fit `[n, k]`.
    pub fn from_parts(
        kind: QuantKind,
        n: usize,
        k: usize,
        data: &[u8],
        scales: Vec<f16>,
    ) -> Option<QMatrix> {
        let groups = k.div_ceil(GROUP);
        let gb = kind.group_bytes();
        if data.len() != n * groups * gb || scales.len() != n * groups {
            return None;
        }
        let mut m = QMatrix::zeroed(kind, n, k);
        m.fill_blocks(|j, g, u| {
            let at = (j * groups + g) * gb;
            unpack_row_group(kind, &data[at..at + gb], u);
            scales[j * groups + g]
        });
        Some(m)
    }

    /// The row-major layout checkpoints keep: (per row, its groups' bytes; per row, its
    /// groups' scales). The inverse of [`QMatrix::from_parts`].
    pub fn row_major(&self) -> (Vec<u8>, Vec<f16>) {
        let (groups, gb) = (self.groups_per_row(), self.kind.group_bytes());
        let mut data = vec![0u8; self.n * groups * gb];
        let mut scales = vec![f16::ZERO; self.n * groups];
        let mut u = [0u8; GROUP];
        for j in 0..self.n {
            for g in 0..groups {
                self.unsigned_group(j, g, &mut u);
                let at = (j * groups + g) * gb;
                pack_row_group(self.kind, &u, &mut data[at..at + gb]);
                scales[j * groups + g] = self.scale(j, g);
            }
        }
        (data, scales)
    }

    /// Row j's group g as stored: unsigned integers (value plus [`QuantKind::offset`]).
    fn unsigned_group(&self, j: usize, g: usize, u: &mut [u8; GROUP]) {
        let bgb = self.kind.block_group_bytes();
        let at = ((j / BLOCK_ROWS) * self.groups_per_row() + g) * bgb;
        gather(self.kind, j % BLOCK_ROWS, &self.packed()[at..at + bgb], u);
    }

    /// Row j's group g as signed integers.
    fn group_values(&self, j: usize, g: usize, q: &mut [i32; GROUP]) {
        let mut u = [0u8; GROUP];
        self.unsigned_group(j, g, &mut u);
        for (o, &v) in q.iter_mut().zip(&u) {
            *o = v as i32 - self.kind.offset();
        }
    }

    fn scale(&self, j: usize, g: usize) -> f16 {
        self.scales[((j / BLOCK_ROWS) * self.groups_per_row() + g) * BLOCK_ROWS + j % BLOCK_ROWS]
    }

    /// Quantize `w` (`[n, k]`, row-major).
    pub fn quantize(kind: QuantKind, w: &[f32], n: usize, k: usize) -> QMatrix {
        assert_eq!(w.len(), n * k, "w must be [n, k]");
        let read = |r: Range<usize>, c: Range<usize>, out: &mut [f32]| {
            for (i, o) in r.zip(out.chunks_exact_mut(c.len().max(1))) {
                o.copy_from_slice(&w[i * k + c.start..i * k + c.end]);
            }
            Ok::<(), std::convert::Infallible>(())
        };
        match QMatrix::quantize_with(kind, n, k, false, read, |_, _| {}) {
            Ok(m) => m,
            Err(never) => match never {},
        }
    }

    /// Quantize an `[n, k]` matrix read a piece at a time: `read(r, c, out)` writes rows `r`,
    /// columns `c` as f32 into `out`, `[r.len(), c.len()]`, or `[c.len(), r.len()]` when
    /// `column_major` (a checkpoint's map, say, in whatever dtype it is stored: a Conv1D weight's
    /// rows lie down its stored columns). Work goes across cores, about 4 MiB of f32 at a time,
    /// reading the source in the order it lies: row-major by blocks of rows, column-major by
    /// groups of 32 columns (whole stored rows). `done(r, c)` is called once that part has all
    /// been read, so its source can be let go.
    pub fn quantize_with<E: Send>(
        kind: QuantKind,
        n: usize,
        k: usize,
        column_major: bool,
        read: impl Fn(Range<usize>, Range<usize>, &mut [f32]) -> std::result::Result<(), E> + Sync,
        done: impl FnMut(Range<usize>, Range<usize>),
    ) -> std::result::Result<QMatrix, E> {
        let mut m = QMatrix::zeroed(kind, n, k);
        if column_major {
            m.quantize_by_columns(read, done)?;
        } else {
            m.quantize_by_rows(read, done)?;
        }
        Ok(m)
    }

    fn quantize_by_rows<E: Send>(
        &mut self,
        read: impl Fn(Range<usize>, Range<usize>, &mut [f32]) -> std::result::Result<(), E> + Sync,
        mut done: impl FnMut(Range<usize>, Range<usize>),
    ) -> std::result::Result<(), E> {
        let (kind, n, k, groups) = (self.kind, self.n, self.k, self.groups_per_row());
        let bgb = kind.block_group_bytes();
        let block_bytes = groups * bgb;
        let slice_blocks = ((1 << 20) / (k.max(1) * BLOCK_ROWS)).max(1);
        let len = self.blocks() * block_bytes;
        let start = self.start;
        let slices = self.buf[start..start + len]
            .chunks_mut((slice_blocks * block_bytes).max(1))
            .zip(
                self.scales
                    .chunks_mut((slice_blocks * groups * BLOCK_ROWS).max(1)),
            );
        for (s, (data, scales)) in slices.enumerate() {
            let b0 = s * slice_blocks;
            data.par_chunks_mut(block_bytes.max(1))
                .zip(scales.par_chunks_mut((groups * BLOCK_ROWS).max(1)))
                .enumerate()
                .try_for_each_init(Vec::new, |staging, (t, (data, scales))| {
                    let j0 = (b0 + t) * BLOCK_ROWS;
                    let j1 = (j0 + BLOCK_ROWS).min(n);
                    let staging = first(staging, (j1 - j0) * k);
                    read(j0..j1, 0..k, staging)?;
                    // The groups' arithmetic vectorises (abs_max, round_to_int) given the width.
                    with_simd(
                        #[inline(always)]
                        || {
                            let mut u = [0u8; GROUP];
                            for (lane, row) in staging.chunks_exact(k.max(1)).enumerate() {
                                for g in 0..groups {
                                    let (i0, i1) = (g * GROUP, ((g + 1) * GROUP).min(k));
                                    let mut group = [0f32; GROUP];
                                    group[..i1 - i0].copy_from_slice(&row[i0..i1]);
                                    scales[g * BLOCK_ROWS + lane] =
                                        quantize_group(kind, &group, &mut u);
                                    scatter(kind, lane, &u, &mut data[g * bgb..(g + 1) * bgb]);
                                }
                            }
                        },
                    );
                    Ok(())
                })?;
            done(
                b0 * BLOCK_ROWS..((b0 + slice_blocks) * BLOCK_ROWS).min(n),
                0..k,
            );
        }
        Ok(())
    }

    /// Column-major: a task per group of 32 columns reads those whole stored rows (contiguous)
    /// and quantizes that group of every block 16 lanes wide ([`quantize_lanes`]) into a buffer
    /// of its own; each slice's groups are then placed into the blocks.
    fn quantize_by_columns<E: Send>(
        &mut self,
        read: impl Fn(Range<usize>, Range<usize>, &mut [f32]) -> std::result::Result<(), E> + Sync,
        mut done: impl FnMut(Range<usize>, Range<usize>),
    ) -> std::result::Result<(), E> {
        let (kind, n, k, groups, blocks) = (
            self.kind,
            self.n,
            self.k,
            self.groups_per_row(),
            self.blocks(),
        );
        let bgb = kind.block_group_bytes();
        let slice_groups = ((1 << 20) / (n.max(1) * GROUP)).max(1);
        let mut part = Vec::new();
        let mut part_scales = Vec::new();
        for g0 in (0..groups).step_by(slice_groups) {
            let g1 = (g0 + slice_groups).min(groups);
            // Not cleared between slices: every slice writes each block's lanes below n, and
            // the lanes past n (a last, partial block) stay zero from the first.
            part.resize((g1 - g0) * blocks * bgb, 0u8);
            part_scales.resize((g1 - g0) * blocks * BLOCK_ROWS, f16::ZERO);
            part.par_chunks_mut((blocks * bgb).max(1))
                .zip(part_scales.par_chunks_mut((blocks * BLOCK_ROWS).max(1)))
                .enumerate()
                .try_for_each_init(Vec::new, |staging, (i, (data, scales))| {
                    let (c0, c1) = ((g0 + i) * GROUP, ((g0 + i + 1) * GROUP).min(k));
                    let staging = first(staging, (c1 - c0) * n);
                    read(0..n, c0..c1, staging)?;
                    with_simd(
                        #[inline(always)]
                        || {
                            for b in 0..blocks {
                                let j0 = b * BLOCK_ROWS;
                                let lanes = (n - j0).min(BLOCK_ROWS);
                                // Columns past k stay zero, as a row's last group is padded.
                                let mut tile = [[0f32; BLOCK_ROWS]; GROUP];
                                for (t, col) in tile.iter_mut().zip(staging.chunks_exact(n.max(1)))
                                {
                                    t[..lanes].copy_from_slice(&col[j0..j0 + lanes]);
                                }
                                quantize_lanes(
                                    kind,
                                    &tile,
                                    lanes,
                                    &mut data[b * bgb..(b + 1) * bgb],
                                    &mut scales[j0..j0 + lanes],
                                );
                            }
                        },
                    );
                    Ok(())
                })?;
            let start = self.start;
            let len = blocks * groups * bgb;
            self.buf[start..start + len]
                .par_chunks_mut((groups * bgb).max(1))
                .zip(self.scales.par_chunks_mut((groups * BLOCK_ROWS).max(1)))
                .enumerate()
                .for_each(|(b, (data, scales))| {
                    for g in g0..g1 {
                        let at = ((g - g0) * blocks + b) * bgb;
                        data[g * bgb..(g + 1) * bgb].copy_from_slice(&part[at..at + bgb]);
                        let at = ((g - g0) * blocks + b) * BLOCK_ROWS;
                        scales[g * BLOCK_ROWS..(g + 1) * BLOCK_ROWS]
                            .copy_from_slice(&part_scales[at..at + BLOCK_ROWS]);
                    }
                });
            done(0..n, g0 * GROUP..(g1 * GROUP).min(k));
        }
        Ok(())
    }

    /// Row `j` as the f32 values it stands for.
    pub fn dequantize_row(&self, j: usize, out: &mut [f32]) {
        let mut q = [0i32; GROUP];
        for g in 0..self.groups_per_row() {
            self.group_values(j, g, &mut q);
            let d = self.scale(j, g).to_f32();
            let (i0, i1) = (g * GROUP, ((g + 1) * GROUP).min(self.k));
            for (o, &v) in out[i0..i1].iter_mut().zip(&q) {
                *o = d * v as f32;
            }
        }
    }

    /// The whole matrix as f32 `[n, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        out.par_chunks_mut(self.k.max(1))
            .enumerate()
            .for_each(|(j, row)| self.dequantize_row(j, row));
        out
    }
}

/// The first `len` values of `buf`, grown (zeroed once) when short: a task's staging is reused
/// as it is, since every read overwrites what it covers (zeroing it per block was 3% of a
/// quantized load).
fn first(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// A zeroed buffer of `len` bytes on huge pages (streamed once per decoding step, as the float
/// weights are), and the 64-byte-aligned offset its data starts at.
fn aligned_buffer(len: usize) -> (Vec<u8>, usize) {
    let buf = crate::weights::advised_zeroed(len + 64);
    let start = buf.as_ptr().align_offset(64);
    (buf, start)
}

/// One group to unsigned integers (value plus [`QuantKind::offset`]); returns the scale.
#[inline(always)]
fn quantize_group(kind: QuantKind, x: &[f32; GROUP], u: &mut [u8; GROUP]) -> f16 {
    let amax = abs_max(x);
    let (d16, inv) = scale(kind, amax, || {
        x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0)
    });
    let (lo, hi, offset) = bounds(kind);
    for (o, v) in u.iter_mut().zip(x) {
        *o = (round_to_int((v * inv).clamp(lo, hi)) + offset) as u8;
    }
    d16
}

/// A group's scale as stored (f16) and its inverse, from its largest magnitude `amax`: q8 maps
/// `amax` to 127; q4 maps the first value of that magnitude, `first()` with its sign, to -8
/// exactly (the sign makes the range -8..=7 fit it). Values are quantized with the scale as
/// stored, so q * d reproduces them as closely as the stored scale allows.
#[inline(always)]
fn scale(kind: QuantKind, amax: f32, first: impl FnOnce() -> f32) -> (f16, f32) {
    let d16 = match kind {
        QuantKind::Q8 => f16::from_f32(amax / 127.0),
        QuantKind::Q4 => f16::from_f32(first() / -8.0),
    };
    let d = d16.to_f32();
    (d16, if d != 0.0 { 1.0 / d } else { 0.0 })
}

/// The signed range and the unsigned offset, as floats and an integer for the rounding loops.
#[inline(always)]
fn bounds(kind: QuantKind) -> (f32, f32, i32) {
    let (lo, hi) = kind.range();
    (lo, hi, kind.offset())
}

/// One block's group from a tile of its 16 lanes' values (`tile[c][lane]`): the same integers
/// and scales as [`quantize_group`] and [`scatter`] on each lane's row (the plain reference,
/// tested against this), with every step running down the 16 lanes as one vector: the
/// magnitudes, the scales (converted to f16 and back together), the rounding, and the packing,
/// which builds each lane's four bytes as one 32-bit word (a byte-by-byte scatter of the
/// lanes was a third of quantizing at load). Lanes from `lanes` on are written as zero (a last
/// block's rows past the matrix), their scales left as they are.
#[inline(always)]
fn quantize_lanes(
    kind: QuantKind,
    tile: &[[f32; BLOCK_ROWS]; GROUP],
    lanes: usize,
    block_group: &mut [u8],
    scales: &mut [f16],
) {
    use half::slice::HalfFloatSliceExt;
    let mut amax = [0f32; BLOCK_ROWS];
    for t in tile {
        for (a, &v) in amax.iter_mut().zip(t) {
            *a = larger(*a, magnitude(v));
        }
    }
    // What each scale stands for (see [`scale`]): q4's is the first value of largest
    // magnitude, found by letting earlier rows overwrite later ones.
    let mut d = [0f32; BLOCK_ROWS];
    match kind {
        QuantKind::Q8 => {
            for (d, a) in d.iter_mut().zip(&amax) {
                *d = a / 127.0;
            }
        }
        QuantKind::Q4 => {
            let mut first = [0f32; BLOCK_ROWS];
            for t in tile.iter().rev() {
                for l in 0..BLOCK_ROWS {
                    first[l] = if t[l].abs() == amax[l] {
                        t[l]
                    } else {
                        first[l]
                    };
                }
            }
            for (d, f) in d.iter_mut().zip(&first) {
                *d = f / -8.0;
            }
        }
    }
    let mut d16 = [f16::ZERO; BLOCK_ROWS];
    d16.convert_from_f32_slice(&d);
    d16.convert_to_f32_slice(&mut d);
    scales[..lanes].copy_from_slice(&d16[..lanes]);
    let mut inv = [0f32; BLOCK_ROWS];
    for (i, &d) in inv.iter_mut().zip(&d) {
        *i = if d != 0.0 { 1.0 / d } else { 0.0 };
    }
    // The low byte, as the reference's `as u8` keeps (all there is but for a NaN weight, whose
    // rounding leaves bits above it), and nothing for lanes past the matrix.
    let mask: [u32; BLOCK_ROWS] = std::array::from_fn(|l| if l < lanes { 0xff } else { 0 });
    let (lo, hi, offset) = bounds(kind);
    let mut q = [[0u32; BLOCK_ROWS]; GROUP];
    for (q, t) in q.iter_mut().zip(tile) {
        for l in 0..BLOCK_ROWS {
            q[l] = (round_to_int((t[l] * inv[l]).clamp(lo, hi)) + offset) as u32 & mask[l];
        }
    }
    // A lane's word holds columns 4c..4c+4 of its row, column 4c in the lowest byte ([`packed_at`]).
    let quad = |c: usize, l: usize| {
        q[4 * c][l] | q[4 * c + 1][l] << 8 | q[4 * c + 2][l] << 16 | q[4 * c + 3][l] << 24
    };
    for (w, out) in block_group.chunks_exact_mut(64).enumerate() {
        let mut word = [0u32; BLOCK_ROWS];
        for (l, v) in word.iter_mut().enumerate() {
            *v = match kind {
                QuantKind::Q8 => quad(w, l),
                QuantKind::Q4 => quad(2 * w, l) | quad(2 * w + 1, l) << 4,
            };
        }
        for (o, v) in out.chunks_exact_mut(4).zip(&word) {
            o.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Input rows quantized to 8 bits per group of 32: what the integer products consume.
pub(crate) struct QuantizedRows {
    /// `[m, groups * 32]`, zero-padded.
    pub q: Vec<i8>,
    /// `[m, groups]`: each group's scale.
    pub d: Vec<f32>,
    /// `[m, groups]`: where each group's integer sum starts, `-offset * sum(q)`, undoing the
    /// unsigned weights' offset (kept ready in memory: the kernels broadcast it straight from
    /// there instead of through a general register).
    pub start: Vec<i32>,
    pub groups: usize,
}

impl QuantizedRows {
    const fn new() -> QuantizedRows {
        QuantizedRows {
            q: Vec::new(),
            d: Vec::new(),
            start: Vec::new(),
            groups: 0,
        }
    }
}

/// `x` (`[m, k]`) quantized for a product with weights stored `offset` above their signed
/// values ([`QuantKind::offset`]).
pub(crate) fn quantize_rows(x: &[f32], m: usize, k: usize, offset: i32) -> QuantizedRows {
    let mut rows = QuantizedRows::new();
    quantize_rows_into(x, m, k, offset, &mut rows);
    rows
}

/// One input row's share of [`QuantizedRows`], numbered: (row, ((q, d), start)).
type RowParts<'a> = (usize, ((&'a mut [i8], &'a mut [f32]), &'a mut [i32]));

/// [`quantize_rows`] into reused buffers; a prompt's many rows across cores.
fn quantize_rows_into(x: &[f32], m: usize, k: usize, offset: i32, out: &mut QuantizedRows) {
    let groups = k.div_ceil(GROUP);
    out.groups = groups;
    out.q.clear();
    out.q.resize(m * groups * GROUP, 0);
    out.d.clear();
    out.d.resize(m * groups, 0.0);
    out.start.clear();
    out.start.resize(m * groups, 0);
    // The widest vectors present: a 512-token prompt spent 8% of its time here at 128-bit.
    let row = |(r, ((q, d), start)): RowParts| {
        with_simd(
            #[inline(always)]
            || {
                for g in 0..groups {
                    let (i0, i1) = (g * GROUP, ((g + 1) * GROUP).min(k));
                    let src = &x[r * k + i0..r * k + i1];
                    let q = &mut q[g * GROUP..][..src.len()];
                    // A whole group's length known here, so its loops unroll into vectors.
                    let sum;
                    (d[g], sum) = match <&[f32; GROUP]>::try_from(src) {
                        Ok(whole) => quantize_input_group(whole, q),
                        Err(_) => quantize_input_group(src, q),
                    };
                    start[g] = -offset * sum;
                }
            },
        )
    };
    let size = groups.max(1);
    if m >= 16 {
        out.q
            .par_chunks_mut(size * GROUP)
            .zip(out.d.par_chunks_mut(size))
            .zip(out.start.par_chunks_mut(size))
            .enumerate()
            .for_each(row);
    } else {
        out.q
            .chunks_mut(size * GROUP)
            .zip(out.d.chunks_mut(size))
            .zip(out.start.chunks_mut(size))
            .enumerate()
            .for_each(row);
    }
}

/// One group of an input row to 8 bits (`q`, as long as `src`): its scale and its integers' sum.
#[inline(always)]
fn quantize_input_group(src: &[f32], q: &mut [i8]) -> (f32, i32) {
    let dx = abs_max(src) / 127.0;
    let inv = if dx > 0.0 { 1.0 / dx } else { 0.0 };
    let mut s = 0i32;
    for (o, v) in q.iter_mut().zip(src) {
        *o = round_to_int((v * inv).clamp(-127.0, 127.0)) as i8;
        s += *o as i32;
    }
    (dx, s)
}

/// The largest |v| of `x`, at most one group, NaN counted as 0: pairwise maxima down a tree,
/// which vectorises where a running maximum stays scalar (16 dependent steps per group, a third
/// of quantizing the weights at load). [`magnitude`] and [`larger`] rather than f32::max, whose
/// NaN rule the compiler keeps with scalar compares.
#[inline(always)]
fn abs_max(x: &[f32]) -> f32 {
    debug_assert!(x.len() <= GROUP);
    let mut a = [0f32; GROUP];
    for (a, &v) in a.iter_mut().zip(x) {
        *a = magnitude(v);
    }
    for w in [16, 8, 4, 2, 1] {
        for i in 0..w {
            a[i] = larger(a[i], a[i + w]);
        }
    }
    a[0]
}

/// |v|, with NaN as 0 (so no NaN reaches [`larger`], and a NaN weight cannot make a scale NaN).
#[inline(always)]
fn magnitude(v: f32) -> f32 {
    let m = v.abs();
    if m > 0.0 {
        m
    } else {
        0.0
    }
}

/// The larger of two magnitudes from [`magnitude`] (one vmaxps).
#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `x` rounded to the nearest integer (ties to even) for |x| < 2^22, read off the bits of
/// `x + 1.5 * 2^23` (whose low mantissa bits then hold it): plain arithmetic that vectorises,
/// where `f32::round` is a libm call per element without SSE4.1 and a float-to-int `as`
/// saturates one value at a time (measured: 2.5% of a q8 decode, and most of quantizing the
/// weights at load).
#[inline(always)]
fn round_to_int(x: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}

thread_local! {
    /// The calling thread's quantized inputs, reused from one product to the next (a decoding
    /// step makes ~50 of them).
    static INPUTS: std::cell::RefCell<QuantizedRows> =
        const { std::cell::RefCell::new(QuantizedRows::new()) };
}

/// Quantized input row `r` against weight row `j`, one element at a time.
fn dot_reference(xq: &QuantizedRows, r: usize, w: &QMatrix, j: usize) -> f32 {
    let mut wq = [0i32; GROUP];
    let mut s = 0f32;
    for g in 0..xq.groups {
        w.group_values(j, g, &mut wq);
        let qx = &xq.q[(r * xq.groups + g) * GROUP..][..GROUP];
        let dot: i32 = qx.iter().zip(&wq).map(|(&a, &b)| a as i32 * b).sum();
        s += xq.d[r * xq.groups + g] * w.scale(j, g).to_f32() * dot as f32;
    }
    s
}

/// `y = x @ w^T (+ bias)` with x's rows quantized as the fast kernels quantize them, one
/// element at a time: the reference the kernels are tested against.
pub fn qlinear_reference(x: &[f32], m: usize, w: &QMatrix, bias: Option<&[f32]>, y: &mut [f32]) {
    let xq = quantize_rows(x, m, w.k, w.kind.offset());
    for r in 0..m {
        for j in 0..w.n {
            y[r * w.n + j] = dot_reference(&xq, r, w, j) + bias.map_or(0.0, |b| b[j]);
        }
    }
}

/// What [`qlinear_reference`] computes, fast (x `[m, k]`, y `[m, n]`), for any number of rows:
/// one token's step, a batch, or a whole prompt.
pub fn qlinear_into(x: &[f32], m: usize, w: &QMatrix, bias: Option<&[f32]>, y: &mut [f32]) {
    assert_eq!(x.len(), m * w.k, "x must be [m, k]");
    INPUTS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut xq) => {
            quantize_rows_into(x, m, w.k, w.kind.offset(), &mut xq);
            qlinear_with(Simd::detect(), &xq, m, w, bias, y)
        }
        // Re-entered on this thread (a product inside a product's task): fresh buffers.
        Err(_) => {
            let xq = quantize_rows(x, m, w.k, w.kind.offset());
            qlinear_with(Simd::detect(), &xq, m, w, bias, y)
        }
    })
}

/// Where the kernels write: `y[r * n + j]`. Each task owns whole blocks of columns, so no two
/// write the same element.
#[derive(Clone, Copy)]
struct Out<'a> {
    y: OutPtr,
    n: usize,
    bias: Option<&'a [f32]>,
}

impl Out<'_> {
    /// Writes `v` (lanes for columns j0..) to row r, bias added, up to column n.
    ///
    /// # Safety
    /// Row r must be a row of y, and the columns this task's own.
    #[inline(always)]
    unsafe fn put(&self, r: usize, j0: usize, v: &[f32]) {
        // Slices of one length, so the copy and the bias add vectorise (a 512-token prompt
        // spent ~5% of its time in this loop element by element).
        let len = v.len().min(self.n.saturating_sub(j0));
        if len == 0 {
            return; // a last block's rows past the matrix
        }
        let dst = std::slice::from_raw_parts_mut(self.y.at(r * self.n + j0), len);
        match self.bias {
            Some(b) => {
                for ((d, s), b) in dst.iter_mut().zip(&v[..len]).zip(&b[j0..j0 + len]) {
                    *d = s + b;
                }
            }
            None => dst.copy_from_slice(&v[..len]),
        }
    }
}

/// The product on a chosen instruction set (tests run each one this CPU has). Blocks of 16
/// output rows are split across cores in runs of about 64 KiB of weights (whole tiles of four
/// blocks); each task passes every input row over its blocks.
fn qlinear_with(
    simd: Simd,
    xq: &QuantizedRows,
    m: usize,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    assert_eq!(y.len(), m * w.n, "y must be [m, n]");
    let blocks = w.blocks();
    if m == 0 || blocks == 0 {
        return;
    }
    let block_bytes = w.groups_per_row() * (w.kind.block_group_bytes() + 2 * BLOCK_ROWS);
    let per_task = (64 * 1024 / block_bytes.max(1))
        .clamp(1, 1 << 16)
        .next_multiple_of(4);
    let out = Out {
        y: OutPtr(y.as_mut_ptr()),
        n: w.n,
        bias,
    };
    (0..blocks.div_ceil(per_task))
        .into_par_iter()
        .for_each(|t| {
            let (b0, b1) = (t * per_task, ((t + 1) * per_task).min(blocks));
            // SAFETY: y is [m, n] and this task's blocks b0..b1 are its own columns; the
            // instruction sets were detected.
            unsafe {
                match simd {
                    #[cfg(target_arch = "x86_64")]
                    Simd::Avx512 => x86::blocks_avx512(xq, m, w, b0, b1, out),
                    #[cfg(target_arch = "x86_64")]
                    Simd::Avx2 => x86::blocks_avx2(xq, m, w, b0, b1, out),
                    Simd::Portable => portable_blocks(xq, m, w, b0, b1, out),
                }
            }
        });
}

/// The scalar kernel for CPUs without AVX2: the reference's arithmetic, per task.
///
/// # Safety
/// As [`Out::put`]: blocks b0..b1 are the caller's columns of y.
unsafe fn portable_blocks(
    xq: &QuantizedRows,
    m: usize,
    w: &QMatrix,
    b0: usize,
    b1: usize,
    out: Out,
) {
    for j in b0 * BLOCK_ROWS..(b1 * BLOCK_ROWS).min(w.n) {
        for r in 0..m {
            out.put(r, j, &[dot_reference(xq, r, w, j)]);
        }
    }
}

/// The order tiles cover a task's units (columns of 16 rows with AVX-512, 8 with AVX2) and the
/// input rows: one row takes four units at a time (four independent sums in flight); several
/// rows take two units at a time, every row passing over them while their weights are in cache,
/// up to `$max_rows` rows per tile (each weight register serves them all).
#[cfg(target_arch = "x86_64")]
macro_rules! schedule {
    ($pass:ident, $q4:literal, $max_rows:literal, $m:expr, $u0:expr, $u1:expr, $($arg:expr),*) => {{
        let (m, u0, u1) = ($m, $u0, $u1);
        let mut u = u0;
        if m == 1 {
            while u + 4 <= u1 {
                $pass::<$q4, 1, 4>(0, u, $($arg),*);
                u += 4;
            }
            while u < u1 {
                $pass::<$q4, 1, 1>(0, u, $($arg),*);
                u += 1;
            }
        } else {
            while u < u1 {
                let two = u + 2 <= u1;
                let mut r = 0;
                while r < m {
                    let rows = (m - r).min($max_rows);
                    match (rows, two) {
                        (6, true) => $pass::<$q4, 6, 2>(r, u, $($arg),*),
                        (5, true) => $pass::<$q4, 5, 2>(r, u, $($arg),*),
                        (4, true) => $pass::<$q4, 4, 2>(r, u, $($arg),*),
                        (3, true) => $pass::<$q4, 3, 2>(r, u, $($arg),*),
                        (2, true) => $pass::<$q4, 2, 2>(r, u, $($arg),*),
                        (_, true) => $pass::<$q4, 1, 2>(r, u, $($arg),*),
                        (6, false) => $pass::<$q4, 6, 1>(r, u, $($arg),*),
                        (5, false) => $pass::<$q4, 5, 1>(r, u, $($arg),*),
                        (4, false) => $pass::<$q4, 4, 1>(r, u, $($arg),*),
                        (3, false) => $pass::<$q4, 3, 1>(r, u, $($arg),*),
                        (2, false) => $pass::<$q4, 2, 1>(r, u, $($arg),*),
                        (_, false) => $pass::<$q4, 1, 1>(r, u, $($arg),*),
                    }
                    r += rows;
                }
                u += if two { 2 } else { 1 };
            }
        }
    }};
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use std::cell::RefCell;

    use super::{Out, QMatrix, QuantKind, QuantizedRows, BLOCK_ROWS, GROUP};

    /// How far ahead of each of a decode tile's four block streams the kernel asks for weights
    /// (one line per 64-byte load). Measured on gpt2's products, one step: none 5.62 ms,
    /// 1 KiB 5.18, 4 KiB 5.20, 16 KiB 5.35 (q8); the machine's noise hides finer differences.
    const PF: usize = 4096;

    /// Four input bytes (columns 4c..4c+4 of row r's group g) as one i32, for broadcasting.
    #[inline(always)]
    unsafe fn quad(xq: &QuantizedRows, r: usize, g: usize, c: usize) -> i32 {
        let p = xq.q.as_ptr().add((r * xq.groups + g) * GROUP + 4 * c);
        std::ptr::read_unaligned(p as *const i32)
    }

    /// Packed blocks as a tile reads them: block `b`'s group `g` at `data + (b * groups + g) *
    /// bgb`, its scales at `scales + (b * groups + g) * 16`; blocks numbered from `base` in y.
    #[derive(Clone, Copy)]
    struct Panel {
        data: *const u8,
        scales: *const half::f16,
        bgb: usize,
        groups: usize,
        base: usize,
    }

    impl Panel {
        fn whole(w: &QMatrix) -> Panel {
            Panel {
                data: w.packed().as_ptr(),
                scales: w.packed_scales().as_ptr(),
                bgb: w.kind.block_group_bytes(),
                groups: w.groups_per_row(),
                base: 0,
            }
        }
    }

    /// From how many input rows a q4 task first unpacks its blocks to bytes (q8's layout, the
    /// values still 0..=15 with q4's offset) and runs q8's tiles over them: the nibbles' mask and
    /// shift then happen once per call instead of once per tile of rows, and q8's six-row tiles
    /// fit in the registers. matvec_bench, gpt2's products, two interleaved pairs: 128 rows
    /// 306-310 -> 315-342 G MAC/s, 32 rows 12.6-12.7 -> 11.0-12.4 ms, 16 rows 5.9-6.3 -> 6.5-6.8
    /// (so not below 24); prefill_probe, a 512-token q4 prompt, three pairs: 203-208 -> 182-190 ms.
    const UNPACK_FROM: usize = 24;

    thread_local! {
        /// A task's unpacked q4 blocks, reused from call to call.
        static UNPACKED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// Blocks b0..b1 of w against every input row, with AVX-512 VNNI.
    ///
    /// # Safety
    /// avx512f/bw/vl/vnni must be available; blocks b0..b1 are the caller's columns of y.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    pub(super) unsafe fn blocks_avx512(
        xq: &QuantizedRows,
        m: usize,
        w: &QMatrix,
        b0: usize,
        b1: usize,
        out: Out,
    ) {
        // Six rows a tile for q8 (24 accumulators), four for q4 read as nibbles, whose unpacking
        // takes more registers. matvec_bench, gpt2's products at 128 rows, two interleaved
        // pairs: q8 325-329 G MAC/s at four rows, 347-348 at six; q4 at six rows fell from 334
        // to 265.
        let whole = Panel::whole(w);
        match w.kind {
            QuantKind::Q8 => schedule!(pass512, false, 6, m, b0, b1, xq, whole, out),
            QuantKind::Q4 if m >= UNPACK_FROM => UNPACKED.with(|cell| {
                let mut buf = cell.borrow_mut();
                let panel = unpack_q4(w, b0, b1, &mut buf);
                schedule!(pass512, false, 6, m, 0, b1 - b0, xq, panel, out)
            }),
            QuantKind::Q4 => schedule!(pass512, true, 4, m, b0, b1, xq, whole, out),
        }
    }

    /// Blocks b0..b1 of a q4 matrix as q8's layout lays them out (see [`UNPACK_FROM`]), in
    /// `buf`: chunk pair p's low nibbles become chunk 2p, its high nibbles chunk 2p + 1.
    ///
    /// # Safety
    /// avx512f/bw must be available; w is q4 and b0..b1 its blocks.
    #[inline(always)]
    unsafe fn unpack_q4(w: &QMatrix, b0: usize, b1: usize, buf: &mut Vec<u8>) -> Panel {
        let groups = w.groups_per_row();
        let (q4, q8) = (
            QuantKind::Q4.block_group_bytes(),
            QuantKind::Q8.block_group_bytes(),
        );
        let units = (b1 - b0) * groups;
        buf.resize(units * q8 + 64, 0);
        let at = buf.as_ptr().align_offset(64);
        let src = w.packed().as_ptr().add(b0 * groups * q4);
        let dst = buf.as_mut_ptr().add(at);
        let nibble = _mm512_set1_epi8(0x0f);
        for u in 0..units {
            for p in 0..q4 / 64 {
                let raw = _mm512_loadu_si512(src.add(u * q4 + p * 64) as *const _);
                let lo = _mm512_and_si512(raw, nibble);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), nibble);
                _mm512_store_si512(dst.add(u * q8 + 2 * p * 64) as *mut _, lo);
                _mm512_store_si512(dst.add(u * q8 + (2 * p + 1) * 64) as *mut _, hi);
            }
        }
        Panel {
            data: dst,
            scales: w.packed_scales().as_ptr().add(b0 * groups * BLOCK_ROWS),
            bgb: q8,
            groups,
            base: b0,
        }
    }

    /// R input rows (from r0) against C blocks (from b), written out.
    #[inline(always)]
    unsafe fn pass512<const Q4: bool, const R: usize, const C: usize>(
        r0: usize,
        b: usize,
        xq: &QuantizedRows,
        w: Panel,
        out: Out,
    ) {
        let acc = tile512::<Q4, R, C>(xq, r0, w, b);
        let mut v = [0f32; BLOCK_ROWS];
        for (r, row) in acc.iter().enumerate() {
            for (c, a) in row.iter().enumerate() {
                _mm512_storeu_ps(v.as_mut_ptr(), *a);
                out.put(r0 + r, (w.base + b + c) * BLOCK_ROWS, &v);
            }
        }
    }

    /// Per group: each row's accumulators start at `-offset * sum(x)`, take eight vpdpbusd
    /// (64 weight bytes against four broadcast input bytes each), and are scaled into the
    /// float sums once.
    #[inline(always)]
    unsafe fn tile512<const Q4: bool, const R: usize, const C: usize>(
        xq: &QuantizedRows,
        r0: usize,
        w: Panel,
        b: usize,
    ) -> [[__m512; C]; R] {
        let groups = xq.groups;
        debug_assert_eq!(groups, w.groups);
        let (bgb, data, scales) = (w.bgb, w.data, w.scales);
        let nibble = _mm512_set1_epi8(0x0f);
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for g in 0..groups {
            let mut ai = [[_mm512_setzero_si512(); C]; R];
            for (r, row) in ai.iter_mut().enumerate() {
                let start = xq.start.as_ptr().add((r0 + r) * groups + g);
                *row = [_mm512_set1_epi32(std::ptr::read(start)); C];
            }
            let wp: [*const u8; C] =
                std::array::from_fn(|c| data.add(((b + c) * groups + g) * bgb));
            if Q4 {
                for p in 0..4 {
                    for c in 0..C {
                        if R == 1 {
                            _mm_prefetch::<_MM_HINT_T0>(
                                wp[c].wrapping_add(p * 64 + PF) as *const i8
                            );
                        }
                        let raw = _mm512_loadu_si512(wp[c].add(p * 64) as *const _);
                        let lo = _mm512_and_si512(raw, nibble);
                        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), nibble);
                        for (r, row) in ai.iter_mut().enumerate() {
                            let xe = _mm512_set1_epi32(quad(xq, r0 + r, g, 2 * p));
                            let xo = _mm512_set1_epi32(quad(xq, r0 + r, g, 2 * p + 1));
                            row[c] = _mm512_dpbusd_epi32(row[c], lo, xe);
                            row[c] = _mm512_dpbusd_epi32(row[c], hi, xo);
                        }
                    }
                }
            } else {
                for ch in 0..8 {
                    for c in 0..C {
                        if R == 1 {
                            _mm_prefetch::<_MM_HINT_T0>(
                                wp[c].wrapping_add(ch * 64 + PF) as *const i8
                            );
                        }
                        let wv = _mm512_loadu_si512(wp[c].add(ch * 64) as *const _);
                        for (r, row) in ai.iter_mut().enumerate() {
                            let xb = _mm512_set1_epi32(quad(xq, r0 + r, g, ch));
                            row[c] = _mm512_dpbusd_epi32(row[c], wv, xb);
                        }
                    }
                }
            }
            for c in 0..C {
                let sp = scales.add(((b + c) * groups + g) * BLOCK_ROWS);
                let dw = _mm512_cvtph_ps(_mm256_loadu_si256(sp as *const __m256i));
                for r in 0..R {
                    let dx = _mm512_set1_ps(*xq.d.get_unchecked((r0 + r) * groups + g));
                    let sums = _mm512_cvtepi32_ps(ai[r][c]);
                    acc[r][c] = _mm512_fmadd_ps(sums, _mm512_mul_ps(dw, dx), acc[r][c]);
                }
            }
        }
        acc
    }

    /// Blocks b0..b1 of w against every input row, with AVX2 (half a block per 256-bit
    /// register; no byte dot product, so maddubs and a pairwise add).
    ///
    /// # Safety
    /// avx2, fma and f16c must be available; blocks b0..b1 are the caller's columns of y.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn blocks_avx2(
        xq: &QuantizedRows,
        m: usize,
        w: &QMatrix,
        b0: usize,
        b1: usize,
        out: Out,
    ) {
        // Sixteen registers: tiles of at most two rows by two halves.
        match w.kind {
            QuantKind::Q8 => schedule!(pass256, false, 2, m, 2 * b0, 2 * b1, xq, w, out),
            QuantKind::Q4 => schedule!(pass256, true, 2, m, 2 * b0, 2 * b1, xq, w, out),
        }
    }

    /// R input rows (from r0) against C half-blocks (from h), written out.
    #[inline(always)]
    unsafe fn pass256<const Q4: bool, const R: usize, const C: usize>(
        r0: usize,
        h: usize,
        xq: &QuantizedRows,
        w: &QMatrix,
        out: Out,
    ) {
        let acc = tile256::<Q4, R, C>(xq, r0, w, h);
        let mut v = [0f32; 8];
        for (r, row) in acc.iter().enumerate() {
            for (c, a) in row.iter().enumerate() {
                _mm256_storeu_ps(v.as_mut_ptr(), *a);
                out.put(r0 + r, (h + c) * 8, &v);
            }
        }
    }

    /// As [`tile512`] on half blocks. maddubs (unsigned times signed bytes, pairs summed to
    /// i16) would overflow on q8's unsigned bytes (255 * 127 * 2), so q8 goes back to signed
    /// and takes the sign trick (|w| times x carrying w's sign) with no offset to undo.
    #[inline(always)]
    unsafe fn tile256<const Q4: bool, const R: usize, const C: usize>(
        xq: &QuantizedRows,
        r0: usize,
        w: &QMatrix,
        h: usize,
    ) -> [[__m256; C]; R] {
        let groups = xq.groups;
        let bgb = w.kind.block_group_bytes();
        let data = w.packed().as_ptr();
        let scales = w.packed_scales().as_ptr();
        let nibble = _mm256_set1_epi8(0x0f);
        let flip = _mm256_set1_epi8(-128);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        for g in 0..groups {
            let mut ai = [[_mm256_setzero_si256(); C]; R];
            if Q4 {
                for (r, row) in ai.iter_mut().enumerate() {
                    let start = *xq.start.get_unchecked((r0 + r) * groups + g);
                    *row = [_mm256_set1_epi32(start); C];
                }
            }
            let wp: [*const u8; C] = std::array::from_fn(|c| {
                let u = h + c;
                data.add(((u / 2) * groups + g) * bgb + (u % 2) * 32)
            });
            if Q4 {
                for p in 0..4 {
                    for c in 0..C {
                        let raw = _mm256_loadu_si256(wp[c].add(p * 64) as *const __m256i);
                        let lo = _mm256_and_si256(raw, nibble);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), nibble);
                        for (r, row) in ai.iter_mut().enumerate() {
                            let xe = _mm256_set1_epi32(quad(xq, r0 + r, g, 2 * p));
                            let xo = _mm256_set1_epi32(quad(xq, r0 + r, g, 2 * p + 1));
                            let pe = _mm256_maddubs_epi16(lo, xe);
                            let po = _mm256_maddubs_epi16(hi, xo);
                            // 15 * 127 * 4 fits i16: add the pairs before widening.
                            let s = _mm256_madd_epi16(_mm256_add_epi16(pe, po), ones);
                            row[c] = _mm256_add_epi32(row[c], s);
                        }
                    }
                }
            } else {
                for ch in 0..8 {
                    for c in 0..C {
                        let raw = _mm256_loadu_si256(wp[c].add(ch * 64) as *const __m256i);
                        let ws = _mm256_xor_si256(raw, flip);
                        let aw = _mm256_sign_epi8(ws, ws);
                        for (r, row) in ai.iter_mut().enumerate() {
                            let xb = _mm256_set1_epi32(quad(xq, r0 + r, g, ch));
                            let sx = _mm256_sign_epi8(xb, ws);
                            let s = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
                            row[c] = _mm256_add_epi32(row[c], s);
                        }
                    }
                }
            }
            for c in 0..C {
                let u = h + c;
                let sp = scales.add(((u / 2) * groups + g) * BLOCK_ROWS + (u % 2) * 8);
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(sp as *const __m128i));
                for r in 0..R {
                    let dx = _mm256_set1_ps(*xq.d.get_unchecked((r0 + r) * groups + g));
                    let sums = _mm256_cvtepi32_ps(ai[r][c]);
                    acc[r][c] = _mm256_fmadd_ps(sums, _mm256_mul_ps(dw, dx), acc[r][c]);
                }
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::random;

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// (m, k, n): one row and several, widths off the group size, heights off the block size.
    const SHAPES: [(usize, usize, usize); 10] = [
        (1, 768, 300),
        (1, 3072, 50),
        (2, 64, 33),
        (3, 40, 17),
        (5, 768, 9),
        (8, 100, 70),
        (1, 16, 5),
        (9, 96, 64),
        (37, 130, 100),
        (16, 33, 16),
    ];

    #[test]
    fn quantized_values_round_trip_within_a_step() {
        for kind in [QuantKind::Q8, QuantKind::Q4] {
            let (n, k) = (7, 70);
            let w = random(n * k, 9);
            let q = QMatrix::quantize(kind, &w, n, k);
            let back = q.dequantize();
            // q8: half a step. q4: half a step, except that values of the other sign than the
            // group's extreme stop at 7 steps, up to a whole step short.
            let (levels, allowed) = if kind == QuantKind::Q8 {
                (127.0, 0.5)
            } else {
                (8.0, 1.0)
            };
            for j in 0..n {
                for g in 0..k.div_ceil(GROUP) {
                    let (i0, i1) = (g * GROUP, ((g + 1) * GROUP).min(k));
                    let amax = w[j * k + i0..j * k + i1]
                        .iter()
                        .fold(0f32, |m, v| m.max(v.abs()));
                    let step = amax / levels;
                    for i in i0..i1 {
                        let err = (back[j * k + i] - w[j * k + i]).abs();
                        assert!(err <= allowed * step * 1.01 + 1e-6, "{kind:?} {err} {step}");
                    }
                }
            }
            // One padded block of 16 rows.
            let groups = k.div_ceil(GROUP);
            assert_eq!(q.bytes(), BLOCK_ROWS * groups * (kind.group_bytes() + 2));
        }
        // q4 keeps the group's extreme exactly (up to the f16 scale).
        let mut w = vec![0.1f32; GROUP];
        w[5] = -0.8;
        let back = QMatrix::quantize(QuantKind::Q4, &w, 1, GROUP).dequantize();
        assert!((back[5] + 0.8).abs() < 1e-3);
    }

    /// The checkpoint layout, byte for byte: q8 as two's complement bytes, q4 with element t in
    /// byte t's low nibble and element t + 16 in its high nibble, each row's scales in order.
    #[test]
    fn row_major_layout_is_the_checkpoint_format() {
        let mut w = vec![0f32; 2 * 64];
        w[0] = 1.0; // row 0, group 0: scale 1/127, q = 127
        w[1] = -0.5; // q = -64 (rounded from -63.5, ties to even)
        w[64 + 32] = -2.0; // row 1, group 1
        w[64 + 32 + 17] = 1.0;
        let q8 = QMatrix::quantize(QuantKind::Q8, &w, 2, 64);
        let (data, scales) = q8.row_major();
        assert_eq!(data.len(), 2 * 64);
        assert_eq!((data[0] as i8, data[1] as i8, data[2] as i8), (127, -64, 0));
        assert_eq!((data[64 + 32] as i8, data[64 + 32 + 17] as i8), (-127, 64));
        assert_eq!(scales[0], f16::from_f32(1.0 / 127.0));
        assert_eq!(scales[3], f16::from_f32(2.0 / 127.0));
        assert_eq!(scales[1], f16::ZERO);
        let q4 = QMatrix::quantize(QuantKind::Q4, &w, 2, 64);
        let (data, scales) = q4.row_major();
        assert_eq!(data.len(), 2 * 32);
        // Row 0: d = 1 / -8; 1.0 -> -8 -> stored 0; -0.5 -> 4 -> 12; zeros -> 8.
        assert_eq!(data[0], 0x80);
        assert_eq!(data[1], 0x8c);
        // Row 1, group 1 (bytes 48..64): d = 2 / 8; -2.0 -> -8 -> 0; element 17 (byte 1, high
        // nibble) 1.0 -> 4 -> 12.
        assert_eq!(data[48], 0x80);
        assert_eq!(data[49], 0xc8);
        assert_eq!(scales[0], f16::from_f32(-0.125));
        assert_eq!(scales[3], f16::from_f32(0.25));
        // And back.
        for q in [q8, q4] {
            let (data, scales) = q.row_major();
            assert_eq!(
                QMatrix::from_parts(q.kind, 2, 64, &data, scales).unwrap(),
                q
            );
        }
    }

    /// `w` (`[n, k]`) quantized from its transpose, read column-major as a Conv1D weight is.
    fn quantize_transposed(kind: QuantKind, w: &[f32], n: usize, k: usize) -> QMatrix {
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        QMatrix::quantize_with(
            kind,
            n,
            k,
            true,
            |r: Range<usize>, c: Range<usize>, out: &mut [f32]| {
                for (ci, col) in c.zip(out.chunks_exact_mut(r.len())) {
                    col.copy_from_slice(&wt[ci * n + r.start..ci * n + r.end]);
                }
                Ok::<_, ()>(())
            },
            |_, _| {},
        )
        .unwrap()
    }

    #[test]
    fn packing_round_trips_and_transposed_reads_agree() {
        for kind in [QuantKind::Q8, QuantKind::Q4] {
            for (n, k) in [(1, 32), (16, 64), (17, 70), (50, 33), (100, 768)] {
                let w = random(n * k, (n * k) as u64);
                let q = QMatrix::quantize(kind, &w, n, k);
                let (data, scales) = q.row_major();
                assert_eq!(data.len(), n * QMatrix::row_bytes(kind, k));
                let back = QMatrix::from_parts(kind, n, k, &data, scales).unwrap();
                assert_eq!(back, q, "{kind:?} {n}x{k}");
                assert_eq!(
                    quantize_transposed(kind, &w, n, k),
                    q,
                    "{kind:?} {n}x{k} transposed"
                );
            }
        }
    }

    #[test]
    fn quantizing_hands_back_what_it_has_read() {
        // Several slices of about 4 MiB of f32, both layouts (the last group partial): every
        // value is read once and reported done once, only after it was read.
        let (n, k) = (3000, 800);
        let w = random(n * k, 9);
        let want = QMatrix::quantize(QuantKind::Q8, &w, n, k);
        for column_major in [false, true] {
            let read = std::sync::Mutex::new(vec![0u8; n * k]);
            let mut released = vec![false; n * k];
            let q = QMatrix::quantize_with(
                QuantKind::Q8,
                n,
                k,
                column_major,
                |r: Range<usize>, c: Range<usize>, out: &mut [f32]| {
                    let mut seen = read.lock().unwrap();
                    for i in r.clone() {
                        for j in c.clone() {
                            let at = if column_major {
                                (j - c.start) * r.len() + (i - r.start)
                            } else {
                                (i - r.start) * c.len() + (j - c.start)
                            };
                            out[at] = w[i * k + j];
                            seen[i * k + j] += 1;
                        }
                    }
                    Ok::<_, ()>(())
                },
                |r, c| {
                    let seen = read.lock().unwrap();
                    for i in r.clone() {
                        for j in c.clone() {
                            assert_eq!(seen[i * k + j], 1, "({i}, {j}) done before read");
                            assert!(!released[i * k + j], "({i}, {j}) done twice");
                            released[i * k + j] = true;
                        }
                    }
                },
            )
            .unwrap();
            assert!(released.iter().all(|&x| x), "column_major {column_major}");
            assert!(q == want, "column_major {column_major}");
        }
    }

    #[test]
    fn a_nan_weight_does_not_set_the_scale() {
        // Both layouts count NaN as 0 when finding a group's largest magnitude, as f32::max did.
        let (n, k) = (16, 32);
        let mut w = random(n * k, 4);
        w[3 * k + 5] = f32::NAN;
        let q = QMatrix::quantize(QuantKind::Q8, &w, n, k);
        let want = w[3 * k..4 * k]
            .iter()
            .filter(|v| !v.is_nan())
            .fold(0f32, |a, v| a.max(v.abs()));
        assert_eq!(q.scale(3, 0), f16::from_f32(want / 127.0));
        assert!(quantize_transposed(QuantKind::Q8, &w, n, k) == q);
    }

    #[test]
    fn both_layouts_agree_on_awkward_groups() {
        // The row path quantizes a group at a time (the plain reference); the column path runs
        // 16 lanes at once with its own scale search, rounding and packing. Groups of zeros and
        // negative zeros (q4's scale keeps the sign of the first extreme), extremes of both
        // signs tied (q4 takes the first), a NaN, tiny values (subnormal f16 scales), one value
        // past f16's range, and a partial last block and group.
        let (n, k) = (21, 70);
        let mut w = random(n * k, 11);
        w[..k].fill(0.0);
        w[k..2 * k].fill(-0.0);
        w[2 * k + 3] = 0.9;
        w[2 * k + 7] = -0.9;
        w[3 * k + 3] = -0.9;
        w[3 * k + 7] = 0.9;
        w[4 * k + 40] = f32::NAN;
        for v in &mut w[5 * k..6 * k] {
            *v *= 1e-6;
        }
        w[6 * k + 1] = 1e7;
        for kind in [QuantKind::Q8, QuantKind::Q4] {
            let q = QMatrix::quantize(kind, &w, n, k);
            let t = quantize_transposed(kind, &w, n, k);
            for j in 0..n {
                let (mut a, mut b) = ([0u8; GROUP], [0u8; GROUP]);
                for g in 0..q.groups_per_row() {
                    q.unsigned_group(j, g, &mut a);
                    t.unsigned_group(j, g, &mut b);
                    assert_eq!(a, b, "{kind:?} row {j} group {g}");
                }
            }
            assert!(t == q, "{kind:?}");
            for j in 0..n {
                for g in 0..q.groups_per_row() {
                    assert_eq!(
                        t.scale(j, g).to_bits(),
                        q.scale(j, g).to_bits(),
                        "{kind:?} {j} {g}"
                    );
                }
            }
        }
    }

    #[test]
    fn round_to_int_rounds_to_nearest_even() {
        for x in [
            0.0f32, 0.49, 0.5, 0.51, 1.5, 2.5, -0.5, -1.5, -126.6, 127.0, -127.0, 3.4999,
        ] {
            assert_eq!(round_to_int(x), x.round_ties_even() as i32, "{x}");
        }
    }

    #[test]
    fn fast_kernels_match_the_reference() {
        for kind in [QuantKind::Q8, QuantKind::Q4] {
            for (m, k, n) in SHAPES {
                let (x, b) = (random(m * k, 1), random(n, 3));
                let w = QMatrix::quantize(kind, &random(n * k, 2), n, k);
                let mut want = vec![0f32; m * n];
                qlinear_reference(&x, m, &w, Some(&b), &mut want);
                let mut got = vec![0f32; m * n];
                qlinear_into(&x, m, &w, Some(&b), &mut got);
                assert!(max_rel(&got, &want) < 1e-5, "{kind:?} {m}x{k}x{n}");
                // Each instruction set this CPU has (the portable kernel included), whichever
                // qlinear_into picked.
                let xq = quantize_rows(&x, m, k, kind.offset());
                for simd in Simd::available() {
                    let mut got = vec![f32::NAN; m * n];
                    qlinear_with(simd, &xq, m, &w, Some(&b), &mut got);
                    let err = max_rel(&got, &want);
                    assert!(err < 1e-5, "{kind:?} {simd:?} {m}x{k}x{n}: {err:e}");
                }
            }
        }
    }

    /// Extreme integers: every weight and input at the ends of their ranges, where an i16
    /// intermediate would overflow.
    #[test]
    fn kernels_hold_the_extremes() {
        for kind in [QuantKind::Q8, QuantKind::Q4] {
            let (m, k, n) = (3, 256, 40);
            let w: Vec<f32> = (0..n * k)
                .map(|i| if (i / 3) % 2 == 0 { 1.0 } else { -1.0 })
                .collect();
            let w = QMatrix::quantize(kind, &w, n, k);
            let x: Vec<f32> = (0..m * k)
                .map(|i| if i % 5 < 2 { -1.0 } else { 1.0 })
                .collect();
            let mut want = vec![0f32; m * n];
            qlinear_reference(&x, m, &w, None, &mut want);
            let xq = quantize_rows(&x, m, k, kind.offset());
            for simd in Simd::available() {
                let mut got = vec![0f32; m * n];
                qlinear_with(simd, &xq, m, &w, None, &mut got);
                assert!(max_rel(&got, &want) < 1e-5, "{kind:?} {simd:?}");
            }
        }
    }

    #[test]
    fn products_approximate_the_f32_matrix() {
        // Weight and input quantization together: q8 within 1%, q4 within 10% of the scale.
        for (kind, tol) in [(QuantKind::Q8, 0.01), (QuantKind::Q4, 0.1)] {
            for m in [2, 40] {
                let (k, n) = (768, 64);
                let (x, w) = (random(m * k, 4), random(n * k, 5));
                let mut exact = vec![0f32; m * n];
                super::super::matvec::linear_reference(&x, m, &w, n, None, &mut exact);
                let mut got = vec![0f32; m * n];
                qlinear_into(&x, m, &QMatrix::quantize(kind, &w, n, k), None, &mut got);
                let err = max_rel(&got, &exact);
                assert!(err < tol, "{kind:?} m={m}: {err}");
            }
        }
    }
}
