//! Giving a connection coroutine's idle stack pages back to the kernel.
//!
//! A connection's coroutine reaches its deepest frames while it parses, routes and translates a
//! request; a stream then waits, often for seconds between events, a few KiB higher up. The pages below
//! stay resident, and so does the stack's bottom page, where the runtime (`generator`) writes the
//! sentinel words it checks for an overflow when the coroutine ends: with 10,000 slow streams that was
//! 80 MiB. Before a long wait, the pages wholly below the current frame, the bottom one included, are
//! handed back with `madvise(MADV_DONTNEED)`; the sentinel is written back when the connection ends.
//! Nothing live sits below the stack pointer and a page touched again reads as zeros, so this is
//! invisible to the program. It costs a system call or two and a page fault or two per wait, which is
//! why it is done only before long ones.

use std::cell::Cell;

/// Bytes below the probe in `release_below`'s frame that are kept: what is live down there while
/// `madvise` runs is the rest of that frame (under 200 bytes) and the return address into it (the
/// binary binds its symbols at load, so no resolver frame either). A waiting stream's stack pages
/// are counted from its depth plus this: 512 keeps a stream at 8 KiB of stack with room to spare.
const KEPT_BELOW: usize = 512;
/// Without the stack's bottom in hand, at most this much is released (beyond the deepest request path).
const MAX_SPAN: usize = 64 * 1024;
/// What the runtime may put above the coroutine's first frame (its closure and entry frames), with room
/// to spare: 0.3–4.3 KiB in release builds (4.3 with whole-program optimisation before the TLS session
/// was kept out of line), about 18 KiB in debug builds. The stack's top is looked for that far up.
const ABOVE_ENTRY: usize = 32 * 1024;
const PAGE: usize = 4096;
/// The word `generator` fills the bottom of a stack with (its `STACK_SENTINEL`), and how many.
const SENTINEL: usize = 0xDEAD_BEEF;
const SENTINEL_WORDS: usize = 8;

/// Where a connection coroutine's stack starts, and its size: enough to know which addresses below
/// the stack pointer are inside the stack.
#[derive(Debug)]
pub struct StackMark {
    entry: usize,
    size: usize,
    /// The stack's bottom (first usable) page, once found; its sentinel words are written back on drop.
    bottom: Cell<Option<usize>>,
}

impl StackMark {
    /// Marks the running coroutine's stack, of `size` bytes. Called first thing in the coroutine.
    #[inline(always)]
    pub fn here(size: usize) -> StackMark {
        let probe = 0u8;
        StackMark { entry: std::hint::black_box(&probe) as *const u8 as usize, size, bottom: Cell::new(None) }
    }

    /// The stack's bottom page: `size` below the stack's top, which is one of the page boundaries
    /// within [`ABOVE_ENTRY`] above the first frame (which one depends on how the runtime's entry frames
    /// were inlined). Each candidate, nearest first, counts only if it is readable and starts with the
    /// runtime's sentinel words. Read with `process_vm_readv`, which fails instead of
    /// faulting on the guard page below a stack (where a candidate below the real top points).
    fn find_bottom(&self) -> Option<usize> {
        let first_top = (self.entry | (PAGE - 1)) + 1;
        (0..=ABOVE_ENTRY / PAGE).find_map(|k| {
            let candidate = (first_top + k * PAGE).checked_sub(self.size)?;
            let mut words = [0usize; SENTINEL_WORDS];
            let local = libc::iovec { iov_base: words.as_mut_ptr().cast(), iov_len: std::mem::size_of_val(&words) };
            let remote = libc::iovec { iov_base: candidate as *mut libc::c_void, iov_len: local.iov_len };
            // SAFETY: reads our own memory into `words`; a bad address is reported, not dereferenced.
            let read = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
            (read == local.iov_len as isize && words == [SENTINEL; SENTINEL_WORDS]).then_some(candidate)
        })
    }

    /// The page-aligned range below `sp` that can be released: from the stack's bottom page when it is
    /// known, else from well above it; up to `sp - KEPT_BELOW`.
    fn idle_range(&self, sp: usize, bottom: Option<usize>) -> Option<(usize, usize)> {
        let end = sp.checked_sub(KEPT_BELOW)? & !(PAGE - 1);
        let start = match bottom {
            Some(bottom) => bottom,
            // The top is at most `entry + ABOVE_ENTRY`, so the bottom page at most that minus `size`:
            // the page above it is the lowest that is certainly neither the guard nor the bottom.
            None => {
                let floor = (self.entry + ABOVE_ENTRY + PAGE).checked_sub(self.size)?.next_multiple_of(PAGE);
                floor.max(end.saturating_sub(MAX_SPAN))
            }
        };
        (start < end && sp <= self.entry).then_some((start, end))
    }

    /// Releases the stack pages below the caller's frame.
    #[inline(never)]
    pub fn release_below(&self) {
        let probe = 0u8;
        let sp = std::hint::black_box(&probe) as *const u8 as usize;
        let bottom = self.bottom.get().or_else(|| self.find_bottom());
        if let Some((start, end)) = self.idle_range(sp, bottom) {
            // SAFETY: the range lies inside this coroutine's own stack mapping, wholly below the live
            // frames (and the `KEPT_BELOW` bytes this call's own frames need); MADV_DONTNEED on private
            // anonymous memory only drops contents nobody reads before writing. The sentinel words it
            // may drop are written back on drop.
            let released = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
            if released == 0 && bottom == Some(start) {
                self.bottom.set(bottom);
            }
        }
    }
}

impl Drop for StackMark {
    fn drop(&mut self) {
        if let Some(bottom) = self.bottom.get() {
            let words = bottom as *mut usize;
            for i in 0..SENTINEL_WORDS {
                // SAFETY: `bottom` was checked to be the start of this stack's bottom page, far below
                // the frame running this (the coroutine's first).
                unsafe { words.add(i).write_volatile(SENTINEL) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_bottom_the_range_stays_above_the_bottom_pages() {
        // A 128 KiB stack whose top is at 0x100000 and whose first frame is 2 KiB lower.
        let mark = StackMark { entry: 0x100000 - 2048, size: 128 * 1024, bottom: Cell::new(None) };
        let bottom = 0x100000 - 128 * 1024;
        let (start, end) = mark.idle_range(0x100000 - 5000, None).unwrap();
        assert_eq!(end, (0x100000 - 5000 - KEPT_BELOW) & !(PAGE - 1));
        assert_eq!(start, end - MAX_SPAN);
        // Deep in the stack, the span stops above the sentinel page.
        let (start, _) = mark.idle_range(bottom + 48 * 1024, None).unwrap();
        assert!(start >= bottom + PAGE, "{start:#x} vs bottom {bottom:#x}");
        // With the bottom known, from it.
        assert_eq!(mark.idle_range(0x100000 - 5000, Some(bottom)).unwrap().0, bottom);
        // Nothing to release near the bottom, or above the first frame.
        assert_eq!(mark.idle_range(bottom + 3 * PAGE, None), None);
        assert_eq!(mark.idle_range(0x100000, Some(bottom)), None);
        assert_eq!(StackMark { entry: 4096, size: 128 * 1024, bottom: Cell::new(None) }.idle_range(2048, None), None);
    }

    /// How many of the pages in `start..end` are resident.
    fn resident(start: usize, end: usize) -> usize {
        let mut pages = vec![0u8; (end - start) / PAGE];
        // SAFETY: the range is page-aligned and mapped (part of the running coroutine's stack).
        let rc = unsafe { libc::mincore(start as *mut libc::c_void, end - start, pages.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        pages.iter().filter(|p| *p & 1 == 1).count()
    }

    #[test]
    fn released_pages_below_a_live_frame_go_back_and_the_frame_is_intact() {
        // On a real coroutine: dirty deep pages, come back up, release, and check the frame's data.
        const STACK: usize = 128 * 1024;
        let builder = may::coroutine::Builder::new().stack_size(STACK / std::mem::size_of::<usize>());
        let body = || {
            let mark = StackMark::here(STACK);
            let kept = std::hint::black_box([7u8; 512]);
            #[inline(never)]
            fn deep(n: usize) -> usize {
                let buf = std::hint::black_box([n as u8; 2048]);
                if n == 0 {
                    buf[100] as usize
                } else {
                    deep(n - 1) + buf[5] as usize
                }
            }
            assert_eq!(deep(6), 21);
            let probe = 0u8;
            let sp = std::hint::black_box(&probe) as *const u8 as usize;
            let (start, end) = mark.idle_range(sp, None).expect("pages below");
            assert!(resident(start, end) >= 3, "deep() dirtied at least 12 KiB below");
            let bottom = mark.find_bottom().expect("the stack's bottom page, with its sentinel");
            assert_eq!(resident(bottom, bottom + PAGE), 1);
            mark.release_below();
            assert!(resident(start, end) <= 1, "only what release_below's own call touched is back");
            assert_eq!(resident(bottom, bottom + PAGE), 0, "the sentinel's page is released");
            assert_eq!(std::hint::black_box(kept), [7u8; 512]);
            assert_eq!(deep(6), 21);
            // A second wait releases again; the end writes the sentinel back (may checks it when the
            // coroutine ends, and would exit the process without it).
            mark.release_below();
            drop(mark);
            // SAFETY: the bottom page of this coroutine's stack, readable.
            assert_eq!(unsafe { *(bottom as *const [usize; SENTINEL_WORDS]) }, [SENTINEL; SENTINEL_WORDS]);
        };
        // SAFETY: the coroutine uses no thread-local state.
        let handle = unsafe { builder.spawn(body) }.expect("a coroutine");
        handle.join().unwrap();
    }

    #[test]
    fn the_bottom_is_found_when_the_first_frame_is_more_than_a_page_below_the_top() {
        // As in a build where the runtime's entry frames and the connection's first frame were inlined
        // into one large frame: the first frame's probe sits over a page below the stack's top.
        const STACK: usize = 128 * 1024;
        let builder = may::coroutine::Builder::new().stack_size(STACK / std::mem::size_of::<usize>());
        let body = || {
            #[inline(never)]
            fn marked() -> usize {
                let mark = StackMark::here(STACK);
                let bottom = mark.find_bottom().expect("the bottom, from a page boundary further up");
                assert!(bottom + STACK > (mark.entry | (PAGE - 1)) + 1, "the top is not the first boundary");
                bottom
            }
            // A frame of over a page above the one that marks the stack.
            let padding = std::hint::black_box([1u8; 4200]);
            let bottom = marked();
            std::hint::black_box(padding);
            // SAFETY: the bottom page of this coroutine's stack, readable.
            assert_eq!(unsafe { *(bottom as *const [usize; SENTINEL_WORDS]) }, [SENTINEL; SENTINEL_WORDS]);
        };
        // SAFETY: the coroutine uses no thread-local state.
        let handle = unsafe { builder.spawn(body) }.expect("a coroutine");
        handle.join().unwrap();
    }
}
