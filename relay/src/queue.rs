//! A bounded queue without a lock on its hot path.
//!
//! tokio's bounded `mpsc` gives a slot back under its semaphore's mutex on
//! every receive, whether or not anyone waits for room. Here an unbounded
//! tokio channel carries the items and one atomic count bounds them: a
//! send takes a slot with a compare-and-swap, a receive gives it back with
//! one atomic subtraction, and only a receive that frees a slot in a full
//! queue touches the [`Notify`] that senders waiting for room sleep on.
//! So the hub's commands and every connection's outbound frames pass with
//! two atomic operations each, and "full" still means exactly `capacity`
//! items waiting (SPEC L6: the hub drops a recipient whose queue is full).
//!
//! The queue is bounded, though its storage is tokio's unbounded channel:
//! that channel's sender is private to this module, and the only ways to
//! it ([`Sender::try_send`], [`Sender::send`]) take a slot first. A slot
//! is given back only after its item has been received, so the count is
//! never below the items waiting, and never above `capacity`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, Notify};

/// Why [`Sender::try_send`] gave the item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// `capacity` items are waiting.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// The receiver is gone; the item comes back.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed<T>(pub T);

/// What both ends share.
#[derive(Debug)]
struct Slots {
    /// Items sent and not yet received.
    taken: AtomicUsize,
    capacity: usize,
    /// Senders waiting for room.
    room: Notify,
}

/// The sending half; clone it for more senders.
#[derive(Debug)]
pub struct Sender<T> {
    tx: mpsc::UnboundedSender<T>,
    slots: Arc<Slots>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            slots: self.slots.clone(),
        }
    }
}

/// The receiving half.
#[derive(Debug)]
pub struct Receiver<T> {
    rx: mpsc::UnboundedReceiver<T>,
    slots: Arc<Slots>,
}

/// A queue that holds at most `capacity` items (at least one).
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let slots = Arc::new(Slots {
        taken: AtomicUsize::new(0),
        capacity: capacity.max(1),
        room: Notify::new(),
    });
    (
        Sender {
            tx,
            slots: slots.clone(),
        },
        Receiver { rx, slots },
    )
}

impl<T> Sender<T> {
    /// Queues `item` if there is room now.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        if !self.take_slot() {
            return Err(if self.tx.is_closed() {
                TrySendError::Closed(item)
            } else {
                TrySendError::Full(item)
            });
        }
        self.tx.send(item).map_err(|e| {
            self.slots.taken.fetch_sub(1, Ordering::Release);
            TrySendError::Closed(e.0)
        })
    }

    /// Queues `item`, waiting for room while the queue is full.
    pub async fn send(&self, mut item: T) -> Result<(), Closed<T>> {
        loop {
            // Registered before looking, so a slot freed in between wakes it.
            let room = self.slots.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(Closed(back)),
                Err(TrySendError::Full(back)) => item = back,
            }
            tokio::select! {
                () = &mut room => {}
                () = self.tx.closed() => return Err(Closed(item)),
            }
        }
    }

    /// True once the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn take_slot(&self) -> bool {
        let slots = &self.slots;
        let mut taken = slots.taken.load(Ordering::Relaxed);
        loop {
            if taken >= slots.capacity {
                return false;
            }
            match slots.taken.compare_exchange_weak(
                taken,
                taken + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => taken = now,
            }
        }
    }
}

impl<T> Receiver<T> {
    /// The next item; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item if one is waiting now.
    pub fn try_recv(&mut self) -> Option<T> {
        let item = self.rx.try_recv().ok()?;
        self.give_slot();
        Some(item)
    }

    /// Polls for the next item.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let item = std::task::ready!(self.rx.poll_recv(cx));
        if item.is_some() {
            self.give_slot();
        }
        Poll::Ready(item)
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.slots.taken.load(Ordering::Relaxed)
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn give_slot(&self) {
        let slots = &self.slots;
        if slots.taken.fetch_sub(1, Ordering::Release) == slots.capacity {
            slots.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn holds_exactly_its_capacity() {
        let (tx, mut rx) = bounded(3);
        for i in 0..3 {
            assert_eq!(tx.try_send(i), Ok(()));
        }
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.try_recv(), Some(0));
        assert_eq!(tx.try_send(4), Ok(()));
        assert_eq!(tx.try_send(5), Err(TrySendError::Full(5)));
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(got, [1, 2, 4]);
        assert!(rx.is_empty());
    }

    #[test]
    fn a_gone_receiver_gives_the_item_back() {
        let (tx, rx) = bounded(1);
        drop(rx);
        assert_eq!(tx.try_send(7), Err(TrySendError::Closed(7)));
        assert!(tx.is_closed());
    }

    #[test]
    fn a_full_queue_whose_receiver_is_gone_says_closed() {
        let (tx, rx) = bounded(1);
        tx.try_send(1).unwrap();
        drop(rx);
        assert_eq!(tx.try_send(2), Err(TrySendError::Closed(2)));
    }

    /// Senders racing on several threads never get more than the
    /// capacity in, and every item refused is handed back.
    #[test]
    fn racing_senders_never_pass_the_capacity() {
        let (tx, mut rx) = bounded(64);
        let taken: usize = std::thread::scope(|scope| {
            let senders: Vec<_> = (0..4)
                .map(|t| {
                    let tx = tx.clone();
                    scope.spawn(move || {
                        (0..1_000)
                            .filter(|i| match tx.try_send(t * 1_000 + i) {
                                Ok(()) => true,
                                Err(TrySendError::Full(back)) => {
                                    assert_eq!(back, t * 1_000 + i);
                                    false
                                }
                                Err(TrySendError::Closed(_)) => panic!("the receiver is here"),
                            })
                            .count()
                    })
                })
                .collect();
            senders.into_iter().map(|s| s.join().unwrap()).sum()
        });
        assert_eq!(taken, 64);
        assert_eq!(rx.len(), 64);
        assert_eq!(std::iter::from_fn(|| rx.try_recv()).count(), 64);
    }

    #[tokio::test]
    async fn recv_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = bounded(2);
        tx.try_send(1).unwrap();
        let other = tx.clone();
        drop(tx);
        other.try_send(2).unwrap();
        drop(other);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_sender_waits_for_room_and_every_waiter_gets_in() {
        let (tx, mut rx) = bounded(1);
        tx.try_send(0).unwrap();
        let waiters: Vec<_> = (1..=3)
            .map(|i| {
                let tx = tx.clone();
                tokio::spawn(async move { tx.send(i).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Nobody got past the full queue.
        assert_eq!(rx.len(), 1);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(
                tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .expect("a waiting sender was never woken")
                    .unwrap(),
            );
        }
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), Ok(()));
        }
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_waiting_sender_learns_the_receiver_is_gone() {
        let (tx, rx) = bounded(1);
        tx.try_send(0).unwrap();
        let waiter = tokio::spawn(async move { tx.send(1).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        let back = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiting sender never noticed")
            .unwrap();
        assert_eq!(back, Err(Closed(1)));
    }
}
