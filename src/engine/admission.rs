//! Admission for the batch scheduler: a bounded waiting queue and the pool of
//! sequence slots of one llama.cpp context.
//!
//! Owns: who waits, who is turned away (queue full), who gets a slot next
//! (first come, first served), and dropping waiters whose client left.
//! Pure and generic: no llama.cpp, no threads, tested without a model.

use std::collections::VecDeque;

/// A request turned away because the queue is full; gives the item back.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull<T>(pub T);

/// Requests waiting for a sequence slot, at most `capacity` of them.
#[derive(Debug)]
pub struct AdmissionQueue<T> {
    waiting: VecDeque<T>,
    capacity: usize,
}

impl<T> AdmissionQueue<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            waiting: VecDeque::new(),
            capacity,
        }
    }

    /// Add a request at the back, or give it back when the queue is full.
    /// `free_slots` are sequences no request holds yet: waiters about to
    /// take them do not count against the capacity.
    pub fn push(&mut self, item: T, free_slots: usize) -> Result<(), QueueFull<T>> {
        if self.waiting.len() >= self.capacity.saturating_add(free_slots) {
            return Err(QueueFull(item));
        }
        self.waiting.push_back(item);
        Ok(())
    }

    /// Remove the waiters for which `is_abandoned` holds; returns them.
    pub fn remove_abandoned(&mut self, is_abandoned: impl Fn(&T) -> bool) -> Vec<T> {
        let mut abandoned = Vec::new();
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        for item in self.waiting.drain(..) {
            if is_abandoned(&item) {
                abandoned.push(item);
            } else {
                kept.push_back(item);
            }
        }
        self.waiting = kept;
        abandoned
    }

    /// Take up to `free_slots` waiters, oldest first.
    pub fn admit(&mut self, free_slots: usize) -> Vec<T> {
        let count = free_slots.min(self.waiting.len());
        self.waiting.drain(..count).collect()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Empty the queue (shutdown); returns what was waiting.
    pub fn drain_all(&mut self) -> Vec<T> {
        self.waiting.drain(..).collect()
    }
}

/// The sequence ids of one context: `0..count`, each used by at most one
/// request at a time.
#[derive(Debug)]
pub struct SlotPool {
    free: Vec<u32>,
    count: u32,
}

impl SlotPool {
    pub fn new(count: u32) -> Self {
        // Reversed so that, all else equal, slot 0 is handed out first.
        Self {
            free: (0..count).rev().collect(),
            count,
        }
    }

    /// The free slot with the highest `score`, e.g. the one whose cache
    /// shares most with a prompt. Ties go to the lowest slot: busy slots
    /// then stay contiguous, and llama.cpp decodes one run of consecutive
    /// sequence ids per pass over the weights (a gap costs a whole pass).
    pub fn acquire_preferring(&mut self, score: impl Fn(u32) -> usize) -> Option<u32> {
        let best = self
            .free
            .iter()
            .enumerate()
            .max_by_key(|&(_, &slot)| (score(slot), std::cmp::Reverse(slot)))
            .map(|(index, _)| index)?;
        Some(self.free.remove(best))
    }

    /// Give a slot back. A slot that is out of range or already free is ignored.
    pub fn release(&mut self, slot: u32) {
        if slot < self.count && !self.free.contains(&slot) {
            self.free.push(slot);
        }
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }
}

/// How many prompt tokens each prefilling sequence may add to a step's batch:
/// generating sequences take one place each first (so a long prompt never
/// stalls them), then prompts fill what is left in arrival order.
///
/// `remaining` holds the prompt tokens each prefilling sequence still has to
/// evaluate; the result has one share per entry.
pub fn prefill_shares(batch_capacity: usize, generating: usize, remaining: &[usize]) -> Vec<usize> {
    let mut left = batch_capacity.saturating_sub(generating);
    remaining
        .iter()
        .map(|&wanted| {
            let share = wanted.min(left);
            left -= share;
            share
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn preferred_slot_is_the_best_scoring_free_one() {
        let mut pool = SlotPool::new(4);
        assert_eq!(
            pool.acquire_preferring(|slot| if slot == 2 { 10 } else { 0 }),
            Some(2)
        );
        // Ties go to the lowest free slot, whatever the order of release.
        assert_eq!(pool.acquire_preferring(|_| 0), Some(0));
        assert_eq!(pool.acquire_preferring(|slot| slot as usize), Some(3));
        assert_eq!(pool.acquire_preferring(|_| 0), Some(1));
        assert_eq!(pool.acquire_preferring(|_| 0), None);
        pool.release(2);
        pool.release(0);
        assert_eq!(pool.acquire_preferring(|_| 5), Some(0));
        assert_eq!(pool.acquire_preferring(|_| 5), Some(2));
    }

    use super::*;

    #[test]
    fn queue_turns_away_beyond_capacity() {
        let mut queue = AdmissionQueue::new(2);
        assert_eq!(queue.push(1, 0), Ok(()));
        assert_eq!(queue.push(2, 0), Ok(()));
        assert_eq!(queue.push(3, 0), Err(QueueFull(3)));
        assert_eq!(queue.len(), 2);
    }

    /// T-E4: `--parallel 4` and a queue of 16 accept 20 at once, no more.
    #[test]
    fn free_slots_add_to_the_room() {
        let mut queue = AdmissionQueue::new(16);
        let accepted = (0..64).filter(|item| queue.push(*item, 4).is_ok()).count();
        assert_eq!(accepted, 20);
    }

    #[test]
    fn zero_capacity_queue_takes_only_what_free_slots_will_run() {
        let mut queue = AdmissionQueue::new(0);
        assert_eq!(queue.push("a", 0), Err(QueueFull("a")));
        assert!(queue.is_empty());
        assert_eq!(queue.push("b", 1), Ok(()));
        assert_eq!(queue.push("c", 1), Err(QueueFull("c")));
    }

    #[test]
    fn admission_is_first_come_first_served_up_to_free_slots() {
        let mut queue = AdmissionQueue::new(8);
        for item in 1..=5 {
            queue.push(item, 0).expect("room");
        }
        assert_eq!(queue.admit(2), vec![1, 2]);
        assert_eq!(queue.admit(0), Vec::<i32>::new());
        assert_eq!(queue.admit(10), vec![3, 4, 5]);
        assert!(queue.is_empty());
    }

    #[test]
    fn abandoned_waiters_never_start_and_free_their_place() {
        let mut queue = AdmissionQueue::new(3);
        for item in [1, 2, 3] {
            queue.push(item, 0).expect("room");
        }
        assert_eq!(queue.remove_abandoned(|item| item % 2 == 1), vec![1, 3]);
        assert_eq!(queue.push(4, 0), Ok(()));
        assert_eq!(queue.admit(5), vec![2, 4]);
    }

    #[test]
    fn slots_are_reused_after_release() {
        let mut pool = SlotPool::new(2);
        assert_eq!(pool.acquire_preferring(|_| 0), Some(0));
        assert_eq!(pool.acquire_preferring(|_| 0), Some(1));
        assert_eq!(pool.acquire_preferring(|_| 0), None);
        assert_eq!(pool.free_count(), 0);
        pool.release(0);
        pool.release(0);
        pool.release(7);
        assert_eq!(pool.free_count(), 1);
        assert_eq!(pool.acquire_preferring(|_| 0), Some(0));
    }

    #[test]
    fn generating_sequences_go_first_and_prompts_share_the_rest_in_order() {
        assert_eq!(prefill_shares(512, 3, &[1000, 10]), vec![509, 0]);
        assert_eq!(prefill_shares(512, 3, &[100, 1000]), vec![100, 409]);
        assert_eq!(prefill_shares(4, 4, &[7]), vec![0]);
        assert_eq!(prefill_shares(4, 9, &[7]), vec![0]);
        assert_eq!(prefill_shares(8, 0, &[]), Vec::<usize>::new());
    }
}
