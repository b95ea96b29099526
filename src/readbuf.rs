//! A socket read buffer: the unconsumed bytes sit at `start..end` of an initialised `Vec`, so a read
//! needs no zero-filling, consuming is an index bump, and the buffer is compacted or grown only when
//! the free tail is short. Used by the client connections, the upstream connections and the SSE tap.

use std::io;

/// Size a buffer starts with (and grows by at least), unless made `with_step`.
pub const INITIAL: usize = 4096;

#[derive(Debug)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// The least it grows by.
    step: usize,
}

impl Default for ReadBuf {
    fn default() -> Self {
        ReadBuf::with_step(INITIAL)
    }
}

impl ReadBuf {
    pub fn new() -> ReadBuf {
        ReadBuf::default()
    }

    /// A buffer that grows by at least `step` bytes (small for many long-lived, mostly idle readers).
    pub fn with_step(step: usize) -> ReadBuf {
        ReadBuf { data: Vec::new(), start: 0, end: 0, step }
    }

    /// The bytes read and not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Appends what `read` puts into at least `min` free bytes (making room first); returns its count.
    pub fn read_with(&mut self, min: usize, read: impl FnOnce(&mut [u8]) -> io::Result<usize>) -> io::Result<usize> {
        if self.data.len() - self.end < min {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < min {
                self.data.resize(self.end + min.max(self.step), 0);
            }
        }
        let n = read(&mut self.data[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Appends bytes already in hand.
    pub fn extend(&mut self, bytes: &[u8]) {
        let _ = self.read_with(bytes.len(), |space| {
            space[..bytes.len()].copy_from_slice(bytes);
            Ok(bytes.len())
        });
    }

    /// Gives back storage beyond `limit` bytes, keeping the pending bytes (a long-lived connection or
    /// stream should not hold what one large read made it allocate).
    pub fn shrink(&mut self, limit: usize) {
        if self.data.len() > limit {
            self.data = self.pending().to_vec();
            (self.start, self.end) = (0, self.data.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_consume_compact_and_shrink() {
        let mut b = ReadBuf::new();
        b.extend(b"hello world");
        b.consume(6);
        assert_eq!(b.pending(), b"world");
        let n = b.read_with(INITIAL, |space| {
            assert!(space.len() >= INITIAL);
            space[..3].copy_from_slice(b"!!!");
            Ok(3)
        });
        assert_eq!(n.unwrap(), 3);
        assert_eq!(b.pending(), b"world!!!");
        b.shrink(0);
        assert_eq!(b.pending(), b"world!!!");
        b.consume(8);
        assert!(b.is_empty());
        b.shrink(0);
        assert_eq!(b.data.len(), 0, "an empty buffer holds no storage");
    }
}
