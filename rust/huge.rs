//! Large buffers of bulk loads, backed by transparent huge pages where the kernel offers them
//! on request.
//!
//! Why: a JSON Lines import of 10M devices fills about 2.5 GB of fresh memory (its parsed
//! columns, the tables it builds). In 4 KiB pages that is over half a million page faults, and
//! on the virtual machines reach runs on each costs microseconds (a third of such an import's
//! CPU time was the kernel's when it also held the file in memory). Distributions commonly
//! enable transparent huge pages only for memory that asks (`madvise` mode), so these buffers
//! ask.
//!
//! Only buffers allocated once at their final size are advised: a vector that grows moves its
//! pages on each reallocation, and moving huge pages cost more than the faults saved (measured:
//! a 1.9 GB vector grown by pushes took twice the kernel time when advised).
//!
//! Invariants: the advice covers only whole 2 MiB pages inside the buffer's allocation, so it
//! affects nothing else; it changes no contents; a refused advice is ignored (it is a hint).

/// Buffers smaller than this are not advised (they would waste most of a huge page).
const MIN_ADVISED: usize = 8 << 20;
const HUGE_PAGE: usize = 2 << 20;

/// Advise the whole huge pages inside the allocation of `v` (its capacity).
fn advise<T>(v: &Vec<T>) {
    let len = v.capacity() * std::mem::size_of::<T>();
    #[cfg(target_os = "linux")]
    if len >= MIN_ADVISED {
        let p = v.as_ptr() as usize;
        let start = p.next_multiple_of(HUGE_PAGE);
        let end = (p + len) & !(HUGE_PAGE - 1);
        if end > start {
            // SAFETY: the range lies inside the allocation of `v`; MADV_HUGEPAGE changes no
            // contents and no mapping, only the page size the kernel may back it with.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = len;
}

/// An empty vector with room for `n` items, which must not grow past that (see the module doc).
pub fn with_capacity<T>(n: usize) -> Vec<T> {
    let v = Vec::with_capacity(n);
    advise(&v);
    v
}

/// `n` copies of `x`, written after the advice so that the first touch faults in huge pages.
pub fn filled<T: Clone>(n: usize, x: T) -> Vec<T> {
    let mut v = with_capacity(n);
    v.resize(n, x);
    v
}

/// The items of `it`, at most `n` of them, in an advised buffer of room for `n`.
pub fn collected<T>(n: usize, it: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut v = with_capacity(n);
    v.extend(it.into_iter().take(n));
    v
}

/// Make room in `v` for `extra` more items, moving them to a fresh advised allocation when it
/// has too little (at least twice the old capacity, so that repeated calls stay amortised).
pub fn reserve<T>(v: &mut Vec<T>, extra: usize) {
    if v.capacity() - v.len() >= extra {
        return;
    }
    let mut w = with_capacity((v.len() + extra).max(2 * v.capacity()));
    w.append(v);
    *v = w;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_have_their_size_and_contents() {
        let n = (MIN_ADVISED / 4) + 12_345;
        let v = filled(n, 7u32);
        assert_eq!((v.len(), v[0], v[n - 1]), (n, 7, 7));
        let mut w: Vec<u64> = with_capacity(n);
        let p = w.as_ptr();
        w.extend(0..n as u64);
        assert_eq!((w.as_ptr(), w[n - 1]), (p, n as u64 - 1), "no reallocation");
        assert!(with_capacity::<u8>(3).capacity() >= 3);
        let c = collected(n, 0..2 * n as u64);
        assert_eq!((c.len(), c[n - 1]), (n, n as u64 - 1), "the first n items");
        let mut r = vec![1u8, 2, 3];
        reserve(&mut r, MIN_ADVISED);
        assert_eq!(r, [1, 2, 3]);
        assert!(r.capacity() >= MIN_ADVISED + 3);
        let cap = r.capacity();
        reserve(&mut r, 5);
        assert_eq!(r.capacity(), cap, "room enough: unchanged");
    }
}
