//! Helpers shared by the integration tests.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{self, Read};

use govchain_blobstore::ChunkerParams;

/// The test file of the reference vectors: `size` bytes, byte `i` being
/// `i % 251`, generated as it is read so that a GiB costs no memory.
pub struct Pattern {
    position: u64,
    size: u64,
}

impl Pattern {
    pub fn new(size: u64) -> Self {
        Self { position: 0, size }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Copies whole periods, so that a GiB reads fast even unoptimised.
        let cycle: Vec<u8> = (0..251_u16).map(|i| i as u8).collect();
        let left = self.size - self.position;
        let count = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let mut filled = 0;
        while filled < count {
            let phase = ((self.position + filled as u64) % 251) as usize;
            let piece = (251 - phase).min(count - filled);
            buf[filled..filled + piece].copy_from_slice(&cycle[phase..phase + piece]);
            filled += piece;
        }
        self.position += count as u64;
        Ok(count)
    }
}

pub fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

pub fn params(chunk_size_bytes: u32, links_per_node_max: u32) -> ChunkerParams {
    ChunkerParams::new(chunk_size_bytes, links_per_node_max).expect("valid test params")
}

/// A reader that serves `data` and then fails instead of ending.
pub struct FailAfter<'a> {
    pub data: &'a [u8],
}

impl Read for FailAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data.is_empty() {
            return Err(io::Error::other("connection reset by the uploader"));
        }
        let count = buf.len().min(self.data.len());
        buf[..count].copy_from_slice(&self.data[..count]);
        self.data = &self.data[count..];
        Ok(count)
    }
}
