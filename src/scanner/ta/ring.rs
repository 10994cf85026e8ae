//! A fixed ring of a series' last values, the history that sliding windows of several
//! lengths read their leaving value from. It never grows after construction.

/// `i` (below twice `cap`) brought into `0..cap`; cheaper than `%` on the hot path.
#[inline(always)]
pub(in crate::scanner) fn wrap(i: usize, cap: usize) -> usize {
    if i >= cap { i - cap } else { i }
}

/// The last `capacity` values pushed, oldest overwritten first.
#[derive(Debug, Clone)]
pub(super) struct Ring<T> {
    values: Box<[T]>,
    next: usize,
    len: usize,
}

impl<T: Copy + Default> Ring<T> {
    /// An empty ring of `capacity` (0 is allowed: pushes are then dropped).
    pub(super) fn new(capacity: usize) -> Ring<T> {
        Ring {
            values: vec![T::default(); capacity].into_boxed_slice(),
            next: 0,
            len: 0,
        }
    }

    /// Values held: the pushes so far, up to the capacity.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The value `k` places back: 1 is the newest, `len()` the oldest held.
    #[inline(always)]
    pub(super) fn back(&self, k: usize) -> T {
        debug_assert!((1..=self.len).contains(&k));
        let cap = self.values.len();
        self.values[wrap(self.next + cap - k, cap)]
    }

    #[inline(always)]
    pub(super) fn push(&mut self, x: T) {
        let cap = self.values.len();
        if cap == 0 {
            return;
        }
        self.values[self.next] = x;
        self.next = wrap(self.next + 1, cap);
        self.len = (self.len + 1).min(cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_counts_from_the_newest_across_wraps() {
        let mut ring = Ring::new(3);
        for x in 1..=7u64 {
            ring.push(x);
            let held = ring.len() as u64;
            assert_eq!(held, x.min(3));
            for k in 1..=held {
                assert_eq!(ring.back(k as usize), x + 1 - k, "after {x}, {k} back");
            }
        }
    }

    #[test]
    fn a_ring_of_nothing_takes_pushes_and_holds_none() {
        let mut ring = Ring::<f64>::new(0);
        ring.push(1.0);
        assert_eq!(ring.len(), 0);
    }
}
