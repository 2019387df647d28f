//! The one loop that proves a replica replayed a sticky read's [`Requirement`] live, when no
//! cached position does: [`prove`]. Both ways to ask a replica for its replay position are a
//! [`Prover`]: the live checker of a handed-out DSN (`routing`), and the pooled connection that
//! will serve a `read_conn` (`balancer`). The loop decides everything they share:
//!
//! * **Order.** The round-robin candidate first, alone: on the caller's thread when the prover
//!   can check it there ([`Prover::check_here`]), else asked ([`Prover::ask`]) and waited for.
//!   Then the others: asked all at once when the prover asks in parallel
//!   ([`Prover::PARALLEL`]), else checked here one after the other. The first answer that
//!   proves the requirement ([`proves`]) wins; nothing is waited for past the deadline.
//! * **Every answer raises the cache** ([`Prover::raise`]), proving or not.
//! * **A failed check.** One that failed by the host (no connection, a broken one, a shutdown)
//!   reports the host ([`Prover::report`]: it leaves the ring) and the loop goes on with the
//!   next candidate; one that failed on a statement (not the host's) is tried once more, on the
//!   caller's thread, and never reported.
//! * **Metrics.** `live_lsn_checks_total` counts every check made or asked (a retry counts
//!   again); `live_check_duration_seconds` observes each proof once, all its checks together.
//!
//! The loop does no I/O and reads no clock of its own: the prover does both, so the loop is
//! unit-tested here with a fake one.

use std::time::Instant;

use super::{Position, Requirement, proves};
use crate::counters::Counters;

/// What one check of a candidate answered.
#[derive(Debug)]
pub(crate) enum Answer<S> {
    /// The replica's replay position, read on `S` (what serves the read when the position
    /// proves it: the pooled connection that was checked; nothing for a DSN).
    Read(Position, S),
    /// No position to go by: the server is not a standby, the position was unreadable, the
    /// connection reached a server the check cannot vouch for, or the checker would not say
    /// why it has none. Not a failure of the host.
    Nothing,
    /// The check failed by the host (no connection, a broken one, a server shutting down).
    HostFailed,
    /// A statement of the check failed, not the host: tried once more.
    StatementFailed,
}

/// One way to ask a replica for its replay position (see the module notes).
pub(crate) trait Prover {
    /// A replica the loop may check.
    type Candidate;
    /// What a read answer carries along (and a proof hands back).
    type Served;
    /// Whether the candidates after the first are asked all at once ([`Prover::ask`]), rather
    /// than checked here one after the other.
    const PARALLEL: bool;

    /// The current time.
    fn now(&self) -> Instant;
    /// Checks `c` on the caller's thread, by `deadline` as far as the check allows: the answer,
    /// or `None` when it cannot be checked here now (then it is asked).
    fn check_here(&self, c: &Self::Candidate, deadline: Instant) -> Option<Answer<Self::Served>>;
    /// Asks for a check of `c` (the `index`-th candidate) off the caller's thread; its answer
    /// comes from [`Prover::collect`]. Never blocks. Returns whether it was asked.
    fn ask(&self, index: usize, c: &Self::Candidate) -> bool {
        let _ = (index, c);
        false
    }
    /// The next answer to a question asked, with its candidate's index; `None` when none came
    /// by `deadline`.
    fn collect(&self, deadline: Instant) -> Option<(usize, Answer<Self::Served>)> {
        let _ = deadline;
        None
    }
    /// Raises the cached position of `c` with `pos`, read on `served`.
    fn raise(&self, c: &Self::Candidate, served: &Self::Served, pos: Position);
    /// Reports `c` as failing (a check failed by the host).
    fn report(&self, c: &Self::Candidate);
}

/// The first of `candidates` (the round-robin candidate first) proven to satisfy `req` by a
/// live check before `deadline`: its index and what its answer carried (see the module notes).
/// `None` when no candidate proved it in time, or when there is none or no time.
pub(crate) fn prove<P: Prover>(
    prover: &P,
    candidates: &[P::Candidate],
    req: Requirement,
    deadline: Instant,
    counters: &Counters,
) -> Option<(usize, P::Served)> {
    let start = prover.now();
    if candidates.is_empty() || start >= deadline {
        return None;
    }
    let run = Run {
        prover,
        candidates,
        req,
        deadline,
        counters,
    };
    let proof = run.all();
    counters
        .live_check_latency
        .observe(prover.now().saturating_duration_since(start));
    proof
}

/// One proof under way.
struct Run<'a, P: Prover> {
    prover: &'a P,
    candidates: &'a [P::Candidate],
    req: Requirement,
    deadline: Instant,
    counters: &'a Counters,
}

impl<P: Prover> Run<'_, P> {
    fn all(&self) -> Option<(usize, P::Served)> {
        if let Some(proof) = self.one(0) {
            return Some(proof);
        }
        let rest = 1..self.candidates.len();
        if P::PARALLEL {
            let asked = rest.filter(|&i| self.ask(i)).count();
            return self.wait(asked);
        }
        for i in rest {
            if self.prover.now() >= self.deadline {
                return None;
            }
            if let Some(proof) = self.one(i) {
                return Some(proof);
            }
        }
        None
    }

    /// Checks candidate `i`: here when the prover can, else asked and waited for.
    fn one(&self, i: usize) -> Option<(usize, P::Served)> {
        match self.here(i) {
            Some(answer) => self.settle(i, answer, true),
            None if self.ask(i) => self.wait(1),
            None => None,
        }
    }

    /// Waits for `waiting` answers at most, until one proves or the deadline passes.
    fn wait(&self, mut waiting: usize) -> Option<(usize, P::Served)> {
        while waiting > 0 {
            let (i, answer) = self.prover.collect(self.deadline)?;
            waiting -= 1;
            if let Some(proof) = self.settle(i, answer, true) {
                return Some(proof);
            }
        }
        None
    }

    /// What candidate `i`'s answer means: raised into the cache, a proof, a report, a retry.
    fn settle(
        &self,
        i: usize,
        answer: Answer<P::Served>,
        retry: bool,
    ) -> Option<(usize, P::Served)> {
        let c = &self.candidates[i];
        match answer {
            Answer::Read(pos, served) => {
                self.prover.raise(c, &served, pos);
                proves(pos, self.req).then_some((i, served))
            }
            Answer::Nothing => None,
            Answer::HostFailed => {
                self.prover.report(c);
                None
            }
            Answer::StatementFailed if retry && self.prover.now() < self.deadline => {
                let again = self.here(i)?;
                self.settle(i, again, false)
            }
            Answer::StatementFailed => None,
        }
    }

    /// A check of candidate `i` on the caller's thread, counted when made.
    fn here(&self, i: usize) -> Option<Answer<P::Served>> {
        let answer = self.prover.check_here(&self.candidates[i], self.deadline);
        if answer.is_some() {
            self.counters.count(&self.counters.live_lsn_checks);
        }
        answer
    }

    /// A check of candidate `i` asked off the caller's thread, counted when asked.
    fn ask(&self, i: usize) -> bool {
        let asked = self.prover.ask(i, &self.candidates[i]);
        if asked {
            self.counters.count(&self.counters.live_lsn_checks);
        }
        asked
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;
    use std::time::Duration;

    use super::*;
    use crate::lsn::Lsn;

    const TL: u32 = 2;
    /// What one check or one answer costs on the fake clock.
    const COST: Duration = Duration::from_millis(10);

    fn pos(l: u64) -> Position {
        Position {
            lsn: Lsn::from_u64(l),
            timeline: TL,
        }
    }

    fn req(l: u64) -> Requirement {
        Requirement {
            lsn: Lsn::from_u64(l),
            timeline: TL,
        }
    }

    /// A scripted prover: each candidate's answers in order (the `u32` a read carries is the
    /// candidate's number and the attempt, to tell them apart), a clock that each check and
    /// each collected answer moves by [`COST`], and a record of everything the loop did.
    struct Fake {
        /// Candidates that cannot be checked here (they are asked).
        busy: Vec<usize>,
        /// Candidates whose questions cannot be queued.
        unaskable: Vec<usize>,
        script: RefCell<Vec<VecDeque<Answer<u32>>>>,
        clock: Cell<Instant>,
        asked: RefCell<VecDeque<usize>>,
        checked_here: RefCell<Vec<usize>>,
        raised: RefCell<Vec<(usize, u32, Position)>>,
        reported: RefCell<Vec<usize>>,
    }

    /// Candidates are their index.
    impl Prover for Fake {
        type Candidate = usize;
        type Served = u32;
        const PARALLEL: bool = false;

        fn now(&self) -> Instant {
            self.clock.get()
        }
        fn check_here(&self, c: &usize, _deadline: Instant) -> Option<Answer<u32>> {
            if self.busy.contains(c) {
                return None;
            }
            self.checked_here.borrow_mut().push(*c);
            self.clock.set(self.clock.get() + COST);
            Some(self.next(*c))
        }
        fn ask(&self, index: usize, c: &usize) -> bool {
            assert_eq!(index, *c);
            if self.unaskable.contains(c) {
                return false;
            }
            self.asked.borrow_mut().push_back(*c);
            true
        }
        fn collect(&self, deadline: Instant) -> Option<(usize, Answer<u32>)> {
            let c = self.asked.borrow_mut().pop_front()?;
            let at = self.clock.get() + COST;
            if at > deadline {
                self.clock.set(deadline);
                return None;
            }
            self.clock.set(at);
            Some((c, self.next(c)))
        }
        fn raise(&self, c: &usize, served: &u32, pos: Position) {
            self.raised.borrow_mut().push((*c, *served, pos));
        }
        fn report(&self, c: &usize) {
            self.reported.borrow_mut().push(*c);
        }
    }

    impl Fake {
        fn new(script: Vec<Vec<Answer<u32>>>) -> Fake {
            Fake {
                busy: Vec::new(),
                unaskable: Vec::new(),
                script: RefCell::new(script.into_iter().map(VecDeque::from).collect()),
                clock: Cell::new(Instant::now()),
                asked: RefCell::default(),
                checked_here: RefCell::default(),
                raised: RefCell::default(),
                reported: RefCell::default(),
            }
        }
        fn next(&self, c: usize) -> Answer<u32> {
            self.script.borrow_mut()[c]
                .pop_front()
                .unwrap_or_else(|| panic!("candidate {c} checked more often than scripted"))
        }
        fn candidates(&self) -> Vec<usize> {
            (0..self.script.borrow().len()).collect()
        }
        fn start(&self) -> Instant {
            self.clock.get()
        }
    }

    /// The same fake, asking the candidates after the first in parallel.
    struct Parallel(Fake);

    impl Prover for Parallel {
        type Candidate = usize;
        type Served = u32;
        const PARALLEL: bool = true;

        fn now(&self) -> Instant {
            self.0.now()
        }
        fn check_here(&self, c: &usize, deadline: Instant) -> Option<Answer<u32>> {
            self.0.check_here(c, deadline)
        }
        fn ask(&self, index: usize, c: &usize) -> bool {
            self.0.ask(index, c)
        }
        fn collect(&self, deadline: Instant) -> Option<(usize, Answer<u32>)> {
            self.0.collect(deadline)
        }
        fn raise(&self, c: &usize, served: &u32, pos: Position) {
            self.0.raise(c, served, pos);
        }
        fn report(&self, c: &usize) {
            self.0.report(c);
        }
    }

    /// Runs the loop with a budget of `budget` checks; returns the proof and the metrics.
    fn run<P: Prover<Candidate = usize, Served = u32>>(
        p: &P,
        fake: &Fake,
        budget: u32,
        r: Requirement,
    ) -> (Option<(usize, u32)>, u64, u64) {
        let counters = Counters::new();
        let deadline = fake.start() + COST * budget;
        let proof = prove(p, &fake.candidates(), r, deadline, &counters);
        let checks = counters.values().live_lsn_checks;
        let (_, observed, _) = counters.live_check_latency.read();
        (proof, checks, observed)
    }

    fn read(l: u64, served: u32) -> Answer<u32> {
        Answer::Read(pos(l), served)
    }

    #[test]
    fn the_first_candidate_proves_alone() {
        let f = Fake::new(vec![vec![read(10, 0)], vec![], vec![]]);
        let (proof, checks, observed) = run(&f, &f, 10, req(10));
        assert_eq!(proof, Some((0, 0)));
        assert_eq!(*f.checked_here.borrow(), [0]);
        assert_eq!((checks, observed), (1, 1));
        assert_eq!(*f.raised.borrow(), [(0, 0, pos(10))]);
    }

    #[test]
    fn a_later_candidate_proves_when_the_first_is_behind() {
        let f = Fake::new(vec![
            vec![read(9, 0)],
            vec![Answer::Nothing],
            vec![read(12, 2)],
        ]);
        let (proof, checks, observed) = run(&f, &f, 10, req(10));
        assert_eq!(proof, Some((2, 2)));
        assert_eq!(*f.checked_here.borrow(), [0, 1, 2], "in turn, here");
        assert_eq!((checks, observed), (3, 1));
    }

    #[test]
    fn in_parallel_the_first_is_checked_alone_then_the_others_asked_together() {
        let p = Parallel(Fake::new(vec![
            vec![read(9, 0)],
            vec![read(8, 1)],
            vec![read(11, 2)],
        ]));
        let (proof, checks, observed) = run(&p, &p.0, 10, req(10));
        assert_eq!(proof, Some((2, 2)));
        assert_eq!(*p.0.checked_here.borrow(), [0], "only the first here");
        assert_eq!((checks, observed), (3, 1));
        // The first not checkable here: asked, and waited for before the others are asked.
        let mut f = Fake::new(vec![vec![read(10, 0)], vec![], vec![]]);
        f.busy = vec![0];
        let p = Parallel(f);
        let (proof, checks, _) = run(&p, &p.0, 10, req(10));
        assert_eq!(proof, Some((0, 0)));
        assert!(p.0.checked_here.borrow().is_empty());
        assert_eq!(checks, 1, "the others were never asked");
    }

    #[test]
    fn none_proves_before_the_deadline() {
        // Every candidate behind: all checked, all raised, no proof.
        let f = Fake::new(vec![vec![read(1, 0)], vec![read(2, 1)]]);
        let (proof, checks, observed) = run(&f, &f, 10, req(10));
        assert_eq!(proof, None);
        assert_eq!((checks, observed), (2, 1));
        // A budget of one check: the second candidate is never checked.
        let f = Fake::new(vec![vec![read(1, 0)], vec![read(99, 1)]]);
        let (proof, checks, observed) = run(&f, &f, 1, req(10));
        assert_eq!(proof, None);
        assert_eq!((checks, observed), (1, 1));
        // In parallel, an answer that would come after the deadline is not waited for.
        let p = Parallel(Fake::new(vec![vec![read(1, 0)], vec![read(99, 1)]]));
        let (proof, checks, _) = run(&p, &p.0, 1, req(10));
        assert_eq!(proof, None);
        assert_eq!(checks, 2, "asked, but answered too late");
        // No time at all, or no candidate: nothing is checked, nothing observed.
        let f = Fake::new(vec![vec![read(99, 0)]]);
        assert_eq!(run(&f, &f, 0, req(10)), (None, 0, 0));
        let f = Fake::new(vec![]);
        assert_eq!(run(&f, &f, 10, req(10)), (None, 0, 0));
    }

    #[test]
    fn a_position_on_another_timeline_proves_nothing_but_is_raised() {
        let other = Position {
            lsn: Lsn::from_u64(1 << 40),
            timeline: TL - 1,
        };
        let f = Fake::new(vec![vec![Answer::Read(other, 0)]]);
        assert_eq!(run(&f, &f, 10, req(10)).0, None);
        assert_eq!(*f.raised.borrow(), [(0, 0, other)]);
    }

    #[test]
    fn a_host_failure_is_reported_and_the_next_candidate_checked() {
        let f = Fake::new(vec![vec![Answer::HostFailed], vec![read(10, 1)]]);
        let (proof, checks, observed) = run(&f, &f, 10, req(10));
        assert_eq!(proof, Some((1, 1)));
        assert_eq!(*f.reported.borrow(), [0]);
        assert_eq!(*f.checked_here.borrow(), [0, 1], "no retry");
        assert_eq!((checks, observed), (2, 1));
        // The same rule for an answer collected from a question.
        let p = Parallel(Fake::new(vec![vec![read(1, 0)], vec![Answer::HostFailed]]));
        assert_eq!(run(&p, &p.0, 10, req(10)).0, None);
        assert_eq!(*p.0.reported.borrow(), [1]);
    }

    #[test]
    fn a_statement_failure_is_retried_once_and_never_reported() {
        // Fails, then proves on the retry.
        let f = Fake::new(vec![vec![Answer::StatementFailed, read(10, 1)]]);
        let (proof, checks, observed) = run(&f, &f, 10, req(10));
        assert_eq!(proof, Some((0, 1)));
        assert_eq!((checks, observed), (2, 1), "a retry counts again");
        assert!(f.reported.borrow().is_empty());
        // Fails twice: the next candidate, nothing reported.
        let f = Fake::new(vec![
            vec![Answer::StatementFailed, Answer::StatementFailed],
            vec![read(10, 0)],
        ]);
        let (proof, checks, _) = run(&f, &f, 10, req(10));
        assert_eq!(proof, Some((1, 0)));
        assert_eq!(*f.checked_here.borrow(), [0, 0, 1]);
        assert_eq!(checks, 3);
        assert!(f.reported.borrow().is_empty());
        // No retry once the deadline passed.
        let f = Fake::new(vec![vec![Answer::StatementFailed, read(10, 1)]]);
        assert_eq!(run(&f, &f, 1, req(10)), (None, 1, 1));
        // An asked check that failed on a statement is retried here.
        let p = Parallel(Fake::new(vec![
            vec![read(1, 0)],
            vec![Answer::StatementFailed, read(10, 1)],
        ]));
        assert_eq!(run(&p, &p.0, 10, req(10)).0, Some((1, 1)));
        assert_eq!(*p.0.checked_here.borrow(), [0, 1]);
    }

    #[test]
    fn every_answer_raises_the_cache() {
        let p = Parallel(Fake::new(vec![
            vec![read(5, 0)],
            vec![read(6, 1)],
            vec![Answer::Nothing],
            vec![read(12, 3)],
        ]));
        assert_eq!(run(&p, &p.0, 10, req(10)).0, Some((3, 3)));
        assert_eq!(
            *p.0.raised.borrow(),
            [(0, 0, pos(5)), (1, 1, pos(6)), (3, 3, pos(12))]
        );
        let f = Fake::new(vec![vec![read(5, 0)], vec![read(10, 1)]]);
        run(&f, &f, 10, req(10));
        assert_eq!(*f.raised.borrow(), [(0, 0, pos(5)), (1, 1, pos(10))]);
    }

    #[test]
    fn a_candidate_that_can_be_neither_checked_nor_asked_is_passed_over() {
        let mut f = Fake::new(vec![vec![], vec![read(10, 1)]]);
        f.busy = vec![0];
        f.unaskable = vec![0];
        let (proof, checks, observed) = run(&f, &f, 10, req(10));
        assert_eq!(proof, Some((1, 1)));
        assert_eq!((checks, observed), (1, 1));
    }
}
