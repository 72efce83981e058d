//! Bounded caches of what the mount decoded: directory listings and file
//! chunks, keyed by blob ID (so one copy serves every snapshot that shares
//! it), evicted least recently used first once their bytes pass a bound.
//! A blob being loaded is marked, so that a read and the read-ahead that
//! wants the same chunk decode it once: the second waits for the first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};

use cairn_repo::Id;

enum Slot<V> {
    Ready {
        value: Arc<V>,
        tick: u64,
        bytes: usize,
    },
    Loading,
}

struct State<V> {
    map: HashMap<Id, Slot<V>>,
    /// Ready entries by last use.
    order: BTreeMap<u64, Id>,
    tick: u64,
    bytes: usize,
}

/// A cache of decoded blobs holding at most `limit` bytes (one larger
/// blob is kept alone).
pub struct Cache<V> {
    state: Mutex<State<V>>,
    loaded: Condvar,
    limit: usize,
}

impl<V> Cache<V> {
    /// An empty cache bounded at `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Cache {
            state: Mutex::new(State {
                map: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
                bytes: 0,
            }),
            loaded: Condvar::new(),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<V>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `id` is cached or being loaded.
    pub fn has(&self, id: &Id) -> bool {
        self.lock().map.contains_key(id)
    }

    /// The value of `id`, loaded by `load` (returning it and its size in
    /// bytes) unless cached; waits if another thread is loading it.
    /// Failures are not cached: the next caller tries again.
    pub fn get<E>(
        &self,
        id: &Id,
        load: impl FnOnce() -> Result<(V, usize), E>,
    ) -> Result<Arc<V>, E> {
        let mut st = self.lock();
        loop {
            let State {
                map, order, tick, ..
            } = &mut *st;
            match map.get_mut(id) {
                Some(Slot::Ready { value, tick: t, .. }) => {
                    order.remove(t);
                    *tick += 1;
                    *t = *tick;
                    order.insert(*tick, *id);
                    return Ok(value.clone());
                }
                Some(Slot::Loading) => {
                    st = self.loaded.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                None => break,
            }
        }
        st.map.insert(*id, Slot::Loading);
        drop(st);
        // Unmark on a panic too, or every later reader would wait forever.
        let guard = Unmark {
            cache: self,
            id: *id,
        };
        let loaded = load();
        std::mem::forget(guard);
        let mut st = self.lock();
        let out = match loaded {
            Ok((v, bytes)) => {
                let value = Arc::new(v);
                st.tick += 1;
                let tick = st.tick;
                st.order.insert(tick, *id);
                st.bytes += bytes;
                st.map.insert(
                    *id,
                    Slot::Ready {
                        value: value.clone(),
                        tick,
                        bytes,
                    },
                );
                self.evict(&mut st, id);
                Ok(value)
            }
            Err(e) => {
                st.map.remove(id);
                Err(e)
            }
        };
        drop(st);
        self.loaded.notify_all();
        out
    }

    fn evict(&self, st: &mut State<V>, keep: &Id) {
        while st.bytes > self.limit {
            let Some((&t, &victim)) = st.order.iter().next() else {
                break;
            };
            if victim == *keep {
                break;
            }
            st.order.remove(&t);
            if let Some(Slot::Ready { bytes, .. }) = st.map.remove(&victim) {
                st.bytes -= bytes;
            }
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

struct Unmark<'a, V> {
    cache: &'a Cache<V>,
    id: Id,
}

impl<V> Drop for Unmark<'_, V> {
    fn drop(&mut self) {
        self.cache.lock().map.remove(&self.id);
        self.cache.loaded.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    #[test]
    fn evicts_least_recently_used_past_the_bound() {
        let c: Cache<Vec<u8>> = Cache::new(30);
        let load = |n: u8| move || Ok::<_, ()>((vec![n; 10], 10));
        c.get(&id(1), load(1)).unwrap();
        c.get(&id(2), load(2)).unwrap();
        c.get(&id(3), load(3)).unwrap();
        c.get(&id(1), load(1)).unwrap(); // 1 is now the most recent
        c.get(&id(4), load(4)).unwrap(); // evicts 2
        assert!(c.has(&id(1)) && !c.has(&id(2)) && c.has(&id(3)) && c.has(&id(4)));
        assert_eq!(c.bytes(), 30);
        // One value over the bound is kept alone.
        c.get(&id(5), || Ok::<_, ()>((vec![5; 100], 100))).unwrap();
        assert!(c.has(&id(5)) && !c.has(&id(1)));
        assert_eq!(c.bytes(), 100);
    }

    #[test]
    fn failures_are_not_cached_and_concurrent_loads_happen_once() {
        let c: Arc<Cache<u32>> = Arc::new(Cache::new(1000));
        assert_eq!(
            c.get(&id(1), || Err::<(u32, usize), _>("damaged")),
            Err("damaged")
        );
        assert!(!c.has(&id(1)));
        let loads = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, loads) = (c.clone(), loads.clone());
                std::thread::spawn(move || {
                    *c.get(&id(2), || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok::<_, ()>((7, 4))
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 7);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_panicking_load_does_not_leave_waiters_hanging() {
        let c: Arc<Cache<u32>> = Arc::new(Cache::new(1000));
        let c2 = c.clone();
        let r = std::thread::spawn(move || {
            c2.get(&id(1), || -> Result<(u32, usize), ()> { panic!("boom") })
        })
        .join();
        assert!(r.is_err());
        assert_eq!(*c.get(&id(1), || Ok::<_, ()>((3, 4))).unwrap(), 3);
    }
}
