//! The stages a pass's tiles go through, and the bounded queues between them.
//!
//! A tile is *started* by a worker (claimed, then its source read and decoded into the
//! tile), *computed* (the backend's kernels), and *written* (its chunks encoded and
//! stored), then delivered to its block. How the stages share the threads depends on the
//! backend:
//! - Where the compute is the workers' own work (the CPU kernels), a worker computes and
//!   writes the tile it read. The stages of different workers overlap on the same cores,
//!   and a tile never waits in a queue.
//! - Where the backend computes on threads of its own (a GPU: one submission thread per
//!   ring slot, see [`Downsampler::compute_threads`](crate::backend::Downsampler::compute_threads)),
//!   a worker hands the read tile to the compute queue and goes on: it writes a computed
//!   tile from the write queue if there is one, else reads the next tile. No worker waits
//!   through an upload, the kernels and a readback, so decoding and encoding go on while
//!   the device computes, and several tiles are in flight on it.
//!
//! - A tile whose compute can go in a batch ([`Batch`]: a GPU computes staged tiles in one
//!   submission) takes the tiles of its kind queued behind it along, up to
//!   [`Shape::batch_bytes`] of them. A compute thread never waits for a batch to fill: it
//!   takes what is queued, which is more the more the device is behind.
//!
//! Either way at most `in_flight` tiles are between their claim and their delivery,
//! whatever stage or queue they are in: that is what the memory budget counts. Workers
//! take computed tiles before new ones, which drains the pipeline before filling it. Once
//! no tile is left to claim, workers with nothing to do go back to the pool, where they
//! help the tiles still in flight with their parallel work.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::BuildError;

/// What is left of a tile once a worker has started it.
pub(super) enum Started<'a, O, B = NoBatch> {
    /// Nothing: its output is ready (fill value only, a chunk copied as stored).
    Done(O),
    /// Its writes: it was computed while it was read.
    Write(WriteJob<'a, O>),
    /// Its compute, which returns its writes.
    Compute(ComputeJob<'a, O>),
    /// Its compute, which may run in one batch with other tiles' (only a GPU's tiles, so far).
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    Batched(B),
}

/// A read tile's compute that may run together with other tiles' of its kind: a GPU
/// computes several staged tiles in one submission, so that small tiles do not each pay a
/// round trip to the device.
pub(super) trait Batch<'a, O>: Send + Sized {
    /// The bytes it adds to a batch (its source's).
    fn bytes(&self) -> u64;

    /// Computes `batch` (not empty) together; returns each one's writes, in order.
    ///
    /// # Errors
    /// Stops the pass.
    fn compute(batch: Vec<Self>) -> Result<Vec<WriteJob<'a, O>>, BuildError>;
}

/// The batch of flows whose tiles never go in one: it has no values.
pub(super) enum NoBatch {}

impl<'a, O> Batch<'a, O> for NoBatch {
    fn bytes(&self) -> u64 {
        match *self {}
    }

    fn compute(batch: Vec<Self>) -> Result<Vec<WriteJob<'a, O>>, BuildError> {
        match batch.into_iter().next() {
            Some(never) => match never {},
            None => Ok(Vec::new()),
        }
    }
}

/// A read tile waiting for a compute thread.
enum Queued<'a, O, B> {
    /// Computed on its own.
    Alone(ComputeJob<'a, O>),
    /// Computed with the batchable tiles queued behind it.
    Batched(B),
}

/// Encodes and stores a computed tile's chunks; returns its output.
pub(super) type WriteJob<'a, O> = Box<dyn FnOnce() -> Result<O, BuildError> + Send + 'a>;

/// Computes a read tile's levels; returns what writes them.
pub(super) type ComputeJob<'a, O> = Box<dyn FnOnce() -> Result<WriteJob<'a, O>, BuildError> + Send + 'a>;

/// The next tile to start.
pub(super) enum Next<C> {
    /// This tile.
    Tile(C),
    /// None may start until a tile is delivered (its block's order bounds how far ahead
    /// workers run).
    Wait,
    /// There is none left.
    End,
}

/// The tiles of a pass, as the stages see them.
pub(super) trait TileFlow<'a>: Sync {
    /// A claimed tile.
    type Claim: Send;
    /// What a tile gives its block.
    type Output;
    /// What a tile whose compute may be batched leaves ([`Started::Batched`]).
    type Batch: Batch<'a, Self::Output>;

    /// Claims the next tile. Never blocks: [`Next::Wait`] when none may start now.
    ///
    /// # Errors
    /// Stops the pass (cancellation, a journal that cannot be read).
    fn next(&self) -> Result<Next<Self::Claim>, BuildError>;

    /// Starts a claimed tile: reads it, and computes it if its compute is the reading's.
    ///
    /// # Errors
    /// Stops the pass.
    fn start(&self, claim: &Self::Claim) -> Result<Started<'a, Self::Output, Self::Batch>, BuildError>;

    /// Gives a tile's output to its block.
    ///
    /// # Errors
    /// Stops the pass.
    fn deliver(&self, claim: Self::Claim, output: Self::Output) -> Result<(), BuildError>;
}

/// The threads of a pass and the tiles it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    /// Threads that claim, read and write tiles (and compute them when there are no
    /// compute threads), on the engine's thread pool.
    pub(super) workers: usize,
    /// Threads of the backend's own that compute read tiles; 0 when the workers do.
    pub(super) compute_threads: usize,
    /// Tiles between claim and delivery at most.
    pub(super) in_flight: usize,
    /// Bytes of batchable tiles a compute thread takes at once at most ([`Batch::bytes`];
    /// it takes one tile in any case).
    pub(super) batch_bytes: u64,
}

/// The queues between the stages, and what the threads need to know to stop.
struct Queues<'a, C, O, B> {
    compute: VecDeque<(C, Queued<'a, O, B>)>,
    write: VecDeque<(C, WriteJob<'a, O>)>,
    /// Tiles claimed and not yet delivered.
    in_flight: usize,
    /// Workers still in their loop.
    looping: usize,
    /// No tile is left to claim.
    ended: bool,
    /// The first error; every thread stops at it.
    error: Option<BuildError>,
    /// A thread panicked: the others stop, and the panic goes on once they have.
    panicked: bool,
}

impl<C, O, B> Queues<'_, C, O, B> {
    /// True once the threads have nothing more to do.
    fn finished(&self) -> bool {
        self.panicked || self.error.is_some() || (self.ended && self.in_flight == 0)
    }
}

/// Held by each thread of a pipeline: if the thread panics, the others are told to stop
/// instead of waiting for a tile that will never come.
struct StopOthersOnPanic<'p, 'f, 'a, F: TileFlow<'a>>(&'p Pipeline<'f, 'a, F>);

impl<'a, F: TileFlow<'a>> Drop for StopOthersOnPanic<'_, '_, 'a, F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().panicked = true;
            self.0.changed.notify_all();
        }
    }
}

struct Pipeline<'f, 'a, F: TileFlow<'a>> {
    flow: &'f F,
    shape: Shape,
    queues: Mutex<Queues<'a, F::Claim, F::Output, F::Batch>>,
    /// Notified whenever a queue, the count in flight or `ended` changes.
    changed: Condvar,
}

/// Runs every tile of `flow` through its stages on the threads of `shape`; returns the
/// first error (the other threads stop at their next step; queued tiles are dropped).
pub(super) fn run<'a, F: TileFlow<'a>>(flow: &F, shape: Shape) -> Result<(), BuildError> {
    let shape = Shape {
        workers: shape.workers.max(1),
        in_flight: shape.in_flight.max(1),
        ..shape
    };
    let pipeline = Pipeline {
        flow,
        shape,
        queues: Mutex::new(Queues {
            compute: VecDeque::new(),
            write: VecDeque::new(),
            in_flight: 0,
            looping: shape.workers,
            ended: false,
            error: None,
            panicked: false,
        }),
        changed: Condvar::new(),
    };
    // Compute threads are threads of their own, not the pool's: they block on the device,
    // and a pool thread blocked there would decode and encode nothing meanwhile.
    std::thread::scope(|threads| {
        for _ in 0..pipeline.shape.compute_threads {
            threads.spawn(|| pipeline.compute_loop());
        }
        rayon::scope(|pool| {
            for _ in 0..pipeline.shape.workers {
                pool.spawn(|_| pipeline.worker_loop());
            }
        });
    });
    match pipeline
        .queues
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .error
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl<'a, F: TileFlow<'a>> Pipeline<'_, 'a, F> {
    fn lock(&self) -> MutexGuard<'_, Queues<'a, F::Claim, F::Output, F::Batch>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'g>(
        &self,
        queues: MutexGuard<'g, Queues<'a, F::Claim, F::Output, F::Batch>>,
    ) -> MutexGuard<'g, Queues<'a, F::Claim, F::Output, F::Batch>> {
        self.changed.wait(queues).unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims, reads and writes tiles (computing them too when there are no compute
    /// threads) until none is left or the pass failed.
    fn worker_loop(&self) {
        let _stop = StopOthersOnPanic(self);
        let mut queues = self.lock();
        while !queues.finished() {
            if let Some((claim, job)) = queues.write.pop_front() {
                drop(queues);
                let delivered = job().and_then(|output| self.flow.deliver(claim, output));
                queues = self.settle(delivered);
                continue;
            }
            if !queues.ended && queues.in_flight < self.shape.in_flight {
                match self.flow.next() {
                    Ok(Next::Tile(claim)) => {
                        queues.in_flight += 1;
                        drop(queues);
                        queues = self.carry(claim);
                        continue;
                    }
                    Ok(Next::End) => {
                        queues.ended = true;
                        self.changed.notify_all();
                        continue;
                    }
                    Ok(Next::Wait) => {}
                    Err(e) => {
                        queues.error.get_or_insert(e);
                        self.changed.notify_all();
                        continue;
                    }
                }
            }
            if queues.ended && self.may_leave(&queues) {
                queues.looping -= 1;
                return;
            }
            queues = self.wait(queues);
        }
    }

    /// Whether a worker with nothing to do, once no tile is left to claim, may go back to
    /// the pool. There it helps the tiles still in flight with their parallel reads, kernels
    /// and writes: a pass's last tiles would otherwise run on the threads of their own
    /// workers alone while the others wait. Workers stay for the tiles the compute threads
    /// still hold (each needs one to write it), and one stays in any case.
    fn may_leave(&self, queues: &Queues<'a, F::Claim, F::Output, F::Batch>) -> bool {
        // Without compute threads, each tile in flight is carried by the worker that
        // claimed it.
        queues.looping > 1 && (self.shape.compute_threads == 0 || queues.looping > queues.in_flight)
    }

    /// Takes a claimed tile as far as it is this worker's: through every stage, or up to
    /// the compute queue when compute threads take it from there.
    fn carry(&self, claim: F::Claim) -> MutexGuard<'_, Queues<'a, F::Claim, F::Output, F::Batch>> {
        let delivered = match self.flow.start(&claim) {
            Err(e) => Err(e),
            Ok(Started::Done(output)) => self.flow.deliver(claim, output),
            Ok(Started::Write(write)) => write().and_then(|output| self.flow.deliver(claim, output)),
            Ok(Started::Compute(compute)) if self.shape.compute_threads == 0 => compute()
                .and_then(|write| write())
                .and_then(|output| self.flow.deliver(claim, output)),
            Ok(Started::Batched(batch)) if self.shape.compute_threads == 0 => F::Batch::compute(vec![batch])
                .and_then(|mut writes| writes.pop().expect("one write per tile")())
                .and_then(|output| self.flow.deliver(claim, output)),
            Ok(Started::Compute(compute)) => return self.queue(claim, Queued::Alone(compute)),
            Ok(Started::Batched(batch)) => return self.queue(claim, Queued::Batched(batch)),
        };
        self.settle(delivered)
    }

    /// Queues a read tile for the compute threads.
    fn queue(
        &self,
        claim: F::Claim,
        compute: Queued<'a, F::Output, F::Batch>,
    ) -> MutexGuard<'_, Queues<'a, F::Claim, F::Output, F::Batch>> {
        let mut queues = self.lock();
        queues.compute.push_back((claim, compute));
        self.changed.notify_all();
        queues
    }

    /// Counts a tile as delivered (or the pass as failed) and wakes the threads.
    fn settle(&self, delivered: Result<(), BuildError>) -> MutexGuard<'_, Queues<'a, F::Claim, F::Output, F::Batch>> {
        let mut queues = self.lock();
        queues.in_flight -= 1;
        if let Err(e) = delivered {
            queues.error.get_or_insert(e);
        }
        self.changed.notify_all();
        queues
    }

    /// Computes read tiles, in the order they were read (a batchable one with those of its
    /// kind queued right behind it), until none is left or the pass failed.
    fn compute_loop(&self) {
        let _stop = StopOthersOnPanic(self);
        let mut queues = self.lock();
        while !queues.finished() {
            let Some((claim, compute)) = queues.compute.pop_front() else {
                queues = self.wait(queues);
                continue;
            };
            let (claims, computed) = match compute {
                Queued::Alone(compute) => {
                    drop(queues);
                    (vec![claim], compute().map(|write| vec![write]))
                }
                Queued::Batched(first) => {
                    let (claims, batch) = self.take_batch(&mut queues, claim, first);
                    drop(queues);
                    (claims, F::Batch::compute(batch))
                }
            };
            queues = self.lock();
            match computed {
                Ok(writes) => {
                    assert_eq!(writes.len(), claims.len(), "one write per computed tile");
                    queues.write.extend(claims.into_iter().zip(writes));
                }
                Err(e) => {
                    queues.in_flight -= claims.len();
                    queues.error.get_or_insert(e);
                }
            }
            self.changed.notify_all();
        }
    }

    /// `first` and the batchable tiles queued right behind it, while their bytes stay
    /// within [`Shape::batch_bytes`].
    fn take_batch(
        &self,
        queues: &mut Queues<'a, F::Claim, F::Output, F::Batch>,
        claim: F::Claim,
        first: F::Batch,
    ) -> (Vec<F::Claim>, Vec<F::Batch>) {
        let mut bytes = first.bytes();
        let (mut claims, mut batch) = (vec![claim], vec![first]);
        while let Some((_, Queued::Batched(next))) = queues.compute.front()
            && bytes.saturating_add(next.bytes()) <= self.shape.batch_bytes
        {
            bytes += next.bytes();
            let Some((claim, Queued::Batched(next))) = queues.compute.pop_front() else {
                unreachable!("the front was a batchable tile")
            };
            claims.push(claim);
            batch.push(next);
        }
        (claims, batch)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::backend::BackendError;

    /// When a tile's compute may go on.
    #[derive(Clone, Copy)]
    enum Ready {
        /// Once `t + n` tiles are started, for tile `t` (all of them, if fewer): the tiles
        /// after it are read while it waits. With several compute threads, such a wait may
        /// depend on a tile queued behind the waiting ones, so tests use it with one.
        Ahead(usize),
        /// Once `n` tiles are in flight, or all have been started.
        Full(usize),
    }

    /// Tiles `0..tiles`, each computed by a job that first waits (up to `patience`) until
    /// it is [`Ready`]: how a test asks "does the pipeline read other tiles while this one
    /// is being computed?".
    struct Flow {
        tiles: usize,
        next: AtomicUsize,
        started: Mutex<usize>,
        started_changed: Condvar,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
        delivered: Mutex<Vec<usize>>,
        patience: Duration,
        gave_up: AtomicBool,
        ready: Ready,
        compute_fails: Option<usize>,
        compute_panics: Option<usize>,
        /// `Some(bytes)`: each tile's compute is batchable, of these bytes.
        batched: Option<u64>,
        /// The tiles of each batch computed, in order.
        batches: Mutex<Vec<Vec<usize>>>,
    }

    impl Flow {
        fn new(tiles: usize, ready: Ready, patience: Duration) -> Self {
            Self {
                tiles,
                next: AtomicUsize::new(0),
                started: Mutex::new(0),
                started_changed: Condvar::new(),
                in_flight: AtomicUsize::new(0),
                most_in_flight: AtomicUsize::new(0),
                delivered: Mutex::new(Vec::new()),
                patience,
                gave_up: AtomicBool::new(false),
                ready,
                compute_fails: None,
                compute_panics: None,
                batched: None,
                batches: Mutex::new(Vec::new()),
            }
        }

        fn compute(&self, tile: usize) -> Result<(), BuildError> {
            let ready = |started: &mut usize| match self.ready {
                Ready::Ahead(n) => *started >= (tile + n).min(self.tiles),
                Ready::Full(n) => *started == self.tiles || self.in_flight.load(Ordering::Relaxed) >= n,
            };
            let started = self.started.lock().unwrap();
            let (started, waited) = self
                .started_changed
                .wait_timeout_while(started, self.patience, |s| !ready(s))
                .unwrap();
            drop(started);
            if waited.timed_out() {
                self.gave_up.store(true, Ordering::Relaxed);
            }
            assert_ne!(Some(tile), self.compute_panics, "a compute that panics");
            if Some(tile) == self.compute_fails {
                return Err(BackendError::Gpu(format!("tile {tile} failed")).into());
            }
            Ok(())
        }
    }

    /// The pipeline's view of a [`Flow`], whose jobs borrow it.
    struct Tiles<'a>(&'a Flow);

    /// A batchable tile of a [`Flow`].
    struct BatchedTile<'a> {
        flow: &'a Flow,
        tile: usize,
    }

    impl<'a> Batch<'a, usize> for BatchedTile<'a> {
        fn bytes(&self) -> u64 {
            self.flow.batched.expect("a batched flow")
        }

        fn compute(batch: Vec<Self>) -> Result<Vec<WriteJob<'a, usize>>, BuildError> {
            let flow = batch[0].flow;
            let tiles: Vec<usize> = batch.iter().map(|b| b.tile).collect();
            flow.batches.lock().unwrap().push(tiles.clone());
            let mut writes = Vec::new();
            for tile in tiles {
                flow.compute(tile)?;
                writes.push(Box::new(move || Ok(tile)) as WriteJob<'a, usize>);
            }
            Ok(writes)
        }
    }

    impl<'a> TileFlow<'a> for Tiles<'a> {
        type Claim = usize;
        type Output = usize;
        type Batch = BatchedTile<'a>;

        fn next(&self) -> Result<Next<usize>, BuildError> {
            let tile = self.0.next.fetch_add(1, Ordering::Relaxed);
            Ok(if tile < self.0.tiles {
                Next::Tile(tile)
            } else {
                Next::End
            })
        }

        fn start(&self, &tile: &usize) -> Result<Started<'a, usize, BatchedTile<'a>>, BuildError> {
            let flow = self.0;
            let now = flow.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            flow.most_in_flight.fetch_max(now, Ordering::Relaxed);
            *flow.started.lock().unwrap() += 1;
            flow.started_changed.notify_all();
            if flow.batched.is_some() {
                return Ok(Started::Batched(BatchedTile { flow, tile }));
            }
            Ok(Started::Compute(Box::new(move || {
                flow.compute(tile)?;
                Ok(Box::new(move || Ok(tile)) as WriteJob<'a, usize>)
            })))
        }

        fn deliver(&self, tile: usize, output: usize) -> Result<(), BuildError> {
            assert_eq!(tile, output);
            self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.0.delivered.lock().unwrap().push(tile);
            Ok(())
        }
    }

    fn shape(workers: usize, compute_threads: usize, in_flight: usize) -> Shape {
        Shape {
            workers,
            compute_threads,
            in_flight,
            batch_bytes: 0,
        }
    }

    /// Runs `flow` on a pool of `workers` threads, as the engine does.
    fn run_on_pool(flow: &Flow, shape: Shape) -> Result<(), BuildError> {
        on_pool(shape.workers, || run(&Tiles(flow), shape))
    }

    /// Runs `work` on a pool of its own of `threads` threads.
    fn on_pool<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> R {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(work)
    }

    fn delivered(flow: &Flow) -> Vec<usize> {
        let mut tiles = flow.delivered.lock().unwrap().clone();
        tiles.sort_unstable();
        tiles
    }

    /// One tile, whose start is parallel work that needs a second thread of the pool: one
    /// half waits (up to `patience`) until the other half has run on another thread.
    struct NeedsHelp {
        claimed: AtomicBool,
        helped: AtomicBool,
        patience: Duration,
    }

    impl<'a> TileFlow<'a> for NeedsHelp {
        type Claim = ();
        type Output = ();
        type Batch = NoBatch;

        fn next(&self) -> Result<Next<()>, BuildError> {
            Ok(if self.claimed.swap(true, Ordering::Relaxed) {
                Next::End
            } else {
                Next::Tile(())
            })
        }

        fn start(&self, (): &()) -> Result<Started<'a, ()>, BuildError> {
            let starter = std::thread::current().id();
            let since = std::time::Instant::now();
            rayon::join(
                || {
                    while !self.helped.load(Ordering::Relaxed) && since.elapsed() < self.patience {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                },
                || {
                    if std::thread::current().id() != starter {
                        self.helped.store(true, Ordering::Relaxed);
                    }
                },
            );
            Ok(Started::Done(()))
        }

        fn deliver(&self, (): (), (): ()) -> Result<(), BuildError> {
            Ok(())
        }
    }

    #[test]
    fn a_worker_with_no_tile_left_helps_the_tiles_still_in_flight() {
        for compute_threads in [0, 1] {
            let flow = NeedsHelp {
                claimed: AtomicBool::new(false),
                helped: AtomicBool::new(false),
                patience: Duration::from_secs(20),
            };
            on_pool(2, || run(&flow, shape(2, compute_threads, 2))).unwrap();
            assert!(
                flow.helped.load(Ordering::Relaxed),
                "the worker that found no tile left never ran the other's parallel work \
                 ({compute_threads} compute threads)"
            );
        }
    }

    #[test]
    fn workers_read_the_next_tiles_while_compute_threads_compute() {
        // Each tile is computed only once the next two have been started, which one worker
        // can do only if it does not wait for the compute.
        let flow = Flow::new(6, Ready::Ahead(3), Duration::from_secs(20));
        run_on_pool(&flow, shape(1, 1, 3)).unwrap();
        assert!(!flow.gave_up.load(Ordering::Relaxed));
        assert_eq!(delivered(&flow), (0..6).collect::<Vec<_>>());
        assert_eq!(flow.most_in_flight.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn without_compute_threads_a_worker_computes_the_tile_it_read() {
        // The same flow with the workers computing: the first tile's compute waits in vain
        // for a second tile to be started, as a worker carries its tile to the end.
        let flow = Flow::new(3, Ready::Ahead(2), Duration::from_millis(200));
        run_on_pool(&flow, shape(1, 0, 3)).unwrap();
        assert!(flow.gave_up.load(Ordering::Relaxed));
        assert_eq!(delivered(&flow), vec![0, 1, 2]);
        assert_eq!(flow.most_in_flight.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn tiles_in_flight_never_exceed_the_bound() {
        // Each compute waits until as many tiles as the bound allows are in flight: the
        // pass gets there, and no further, whatever its threads.
        for (workers, compute_threads, in_flight) in [(2, 1, 4), (3, 2, 5), (4, 2, 4), (1, 3, 2)] {
            let flow = Flow::new(40, Ready::Full(in_flight), Duration::from_secs(20));
            run_on_pool(&flow, shape(workers, compute_threads, in_flight)).unwrap();
            assert!(!flow.gave_up.load(Ordering::Relaxed));
            assert_eq!(delivered(&flow), (0..40).collect::<Vec<_>>());
            assert_eq!(
                flow.most_in_flight.load(Ordering::Relaxed),
                in_flight,
                "{workers} workers, {compute_threads} compute threads"
            );
        }
    }

    #[test]
    fn a_failed_compute_stops_the_pass_with_its_error() {
        for compute_threads in [0, 2] {
            let mut flow = Flow::new(50, Ready::Ahead(0), Duration::ZERO);
            flow.compute_fails = Some(7);
            let error = run_on_pool(&flow, shape(2, compute_threads, 4)).unwrap_err();
            assert!(error.to_string().contains("tile 7 failed"), "{error}");
            assert!(!delivered(&flow).contains(&7));
        }
    }

    #[test]
    fn a_panicking_compute_thread_stops_the_workers_and_the_panic_goes_on() {
        let mut flow = Flow::new(20, Ready::Ahead(0), Duration::ZERO);
        flow.compute_panics = Some(3);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_on_pool(&flow, shape(2, 1, 4))));
        assert!(
            result.is_err(),
            "the panic reaches the caller instead of hanging the pass"
        );
    }

    #[test]
    fn a_compute_thread_takes_the_batchable_tiles_queued_behind_its_tile_within_the_bytes() {
        // The first batch waits until every tile is started, so the rest queue up behind it
        // in the order the one worker read them; batches of 30-byte tiles within 100 bytes
        // then hold three tiles each.
        let mut flow = Flow::new(11, Ready::Full(11), Duration::from_secs(20));
        flow.batched = Some(30);
        let pass = Shape {
            batch_bytes: 100,
            ..shape(1, 1, 11)
        };
        run_on_pool(&flow, pass).unwrap();
        assert!(!flow.gave_up.load(Ordering::Relaxed));
        assert_eq!(delivered(&flow), (0..11).collect::<Vec<_>>());
        let batches = flow.batches.lock().unwrap().clone();
        assert_eq!(batches.concat(), (0..11).collect::<Vec<_>>(), "{batches:?}");
        assert!(batches.iter().all(|b| b.len() <= 3), "{batches:?}");
        let (last, full) = batches[1..].split_last().expect("more than one batch");
        assert!(full.iter().all(|b| b.len() == 3), "{batches:?}");
        assert!(!last.is_empty());
    }

    #[test]
    fn batchable_tiles_go_alone_without_a_batch_size_or_compute_threads() {
        // With a compute thread, the first tile's compute waits until all are queued.
        for (compute_threads, batch_bytes, ready) in [(1, 0, Ready::Full(6)), (0, 100, Ready::Ahead(0))] {
            let mut flow = Flow::new(6, ready, Duration::from_secs(20));
            flow.batched = Some(30);
            let pass = Shape {
                batch_bytes,
                ..shape(1, compute_threads, 6)
            };
            run_on_pool(&flow, pass).unwrap();
            assert_eq!(delivered(&flow), (0..6).collect::<Vec<_>>());
            let batches = flow.batches.lock().unwrap().clone();
            assert!(batches.iter().all(|b| b.len() == 1), "{batches:?}");
        }
    }

    #[test]
    fn a_failed_batch_stops_the_pass_and_delivers_none_of_its_tiles() {
        let mut flow = Flow::new(12, Ready::Full(12), Duration::from_secs(20));
        flow.batched = Some(10);
        flow.compute_fails = Some(5);
        let pass = Shape {
            batch_bytes: 40,
            ..shape(1, 1, 12)
        };
        let error = run_on_pool(&flow, pass).unwrap_err();
        assert!(error.to_string().contains("tile 5 failed"), "{error}");
        let batches = flow.batches.lock().unwrap().clone();
        let failed = batches.iter().find(|b| b.contains(&5)).expect("tile 5 was computed");
        let delivered = delivered(&flow);
        assert!(
            failed.iter().all(|t| !delivered.contains(t)),
            "{batches:?}, delivered {delivered:?}"
        );
    }
}
