//! The parallel schedule of a step: the work of all tensors cut into balanced chunks across
//! tensor boundaries, splitting a tensor only at [`BLOCK`] multiples.

use crate::kernel::BLOCK;

#[derive(Clone, Copy)]
pub(super) struct Segment {
    pub job: usize,
    pub start: usize,
    pub end: usize,
}

#[derive(Default)]
pub(super) struct Plan {
    pub lens: Vec<usize>,
    pub chunk: usize,
    segments: Vec<Segment>,
    /// `chunks[c]..chunks[c + 1]` are the segments of chunk `c`.
    chunks: Vec<usize>,
}

impl Plan {
    pub fn rebuild(&mut self, lens: &[usize], chunk: usize) {
        self.lens.clear();
        self.lens.extend_from_slice(lens);
        self.chunk = chunk;
        self.segments.clear();
        self.chunks.clear();
        self.chunks.push(0);
        let mut fill = 0usize;
        for (job, &len) in lens.iter().enumerate() {
            let mut pos = 0;
            while pos < len {
                let room = chunk - fill;
                let mut take = (len - pos).min(room);
                if take < len - pos {
                    take -= take % BLOCK;
                    if take == 0 {
                        self.chunks.push(self.segments.len());
                        fill = 0;
                        continue;
                    }
                }
                self.segments.push(Segment {
                    job,
                    start: pos,
                    end: pos + take,
                });
                pos += take;
                fill += take;
                if fill >= chunk {
                    self.chunks.push(self.segments.len());
                    fill = 0;
                }
            }
        }
        if *self.chunks.last().unwrap_or(&0) != self.segments.len() {
            self.chunks.push(self.segments.len());
        }
    }

    pub fn num_chunks(&self) -> usize {
        self.chunks.len() - 1
    }

    pub fn chunk(&self, c: usize) -> &[Segment] {
        &self.segments[self.chunks[c]..self.chunks[c + 1]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_element_once_at_block_boundaries() {
        let lens = [10, 3 * BLOCK + 5, 1, 7 * BLOCK, 0, 123];
        for chunk in [BLOCK, 2 * BLOCK, 5 * BLOCK, 100 * BLOCK] {
            let mut plan = Plan::default();
            plan.rebuild(&lens, chunk);
            let mut covered = vec![0usize; lens.len()];
            for c in 0..plan.num_chunks() {
                let segs = plan.chunk(c);
                assert!(!segs.is_empty());
                let elems: usize = segs.iter().map(|s| s.end - s.start).sum();
                assert!(elems <= chunk);
                for s in segs {
                    assert_eq!(s.start, covered[s.job], "segments in order");
                    if s.end != lens[s.job] {
                        assert_eq!(s.end % BLOCK, 0);
                    }
                    covered[s.job] = s.end;
                }
            }
            assert_eq!(covered, lens);
        }
    }
}
