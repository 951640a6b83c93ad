//! A bounded cache that counts what it pushes out: every cache of the collector is bounded
//! (DESIGN: bounded structures count what they evict), and the counts reach the heartbeat.

use std::hash::Hash;

use hashlink::LruCache;

pub struct CountedLru<K: Eq + Hash, V> {
    inner: LruCache<K, V>,
    evicted: u64,
}

impl<K: Eq + Hash, V> CountedLru<K, V> {
    pub fn new(capacity: usize) -> Self {
        CountedLru {
            inner: LruCache::new(capacity.max(1)),
            evicted: 0,
        }
    }

    /// The value of `key`, marked as recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.inner.get(key)
    }

    pub fn insert(&mut self, key: K, value: V) {
        if !self.inner.contains_key(&key) && self.inner.len() >= self.inner.capacity() {
            self.inner.remove_lru();
            self.evicted += 1;
        }
        self.inner.insert(key, value);
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.inner.get_mut(key)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.inner.remove(key)
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Entries pushed out to make room, since creation.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_recently_used_and_counts_the_rest() {
        let mut c = CountedLru::new(2);
        c.insert(1, "a");
        c.insert(2, "b");
        c.get(&1);
        c.insert(3, "c");
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1), Some(&"a"));
        c.insert(1, "a2");
        assert_eq!(c.evicted(), 1, "replacing a key evicts nothing");
        assert_eq!(c.len(), 2);
    }
}
