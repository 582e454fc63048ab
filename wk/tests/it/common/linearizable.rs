//! A linearizability checker for a compare-and-set register (Wing & Gong's search with
//! Lowe's memoisation, as Knossos and Porcupine do it), for histories recorded by the HA
//! tests: every operation has an invocation and, unless its outcome is unknown, a
//! completion. Operations whose outcome is unknown may take effect at any point after
//! their invocation, or never.

#![allow(dead_code)]

use std::collections::HashSet;
use std::time::Instant;

/// What a client did to the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read the value `v`.
    Read(i64),
    /// Changed the value from `from` to `to` (only if it was `from`).
    Cas { from: i64, to: i64 },
}

/// One operation: invoked at `call`, completed at `ret` (`None`: outcome unknown).
#[derive(Debug, Clone)]
pub struct Entry {
    pub op: Op,
    pub call: Instant,
    pub ret: Option<Instant>,
}

fn step(op: Op, state: i64) -> Option<i64> {
    match op {
        Op::Read(v) => (v == state).then_some(state),
        Op::Cas { from, to } => (from == state).then_some(to),
    }
}

#[derive(Clone, Copy)]
enum Event {
    Call(usize),
    Return(usize),
}

/// Whether the history is linearizable from `initial`.
pub fn check(history: &[Entry], initial: i64) -> bool {
    // Events in time order; a call sorts before a return at the same instant.
    let mut events: Vec<(Instant, u8, Event)> = Vec::new();
    for (i, e) in history.iter().enumerate() {
        events.push((e.call, 0, Event::Call(i)));
        if let Some(r) = e.ret {
            events.push((r, 1, Event::Return(i)));
        }
    }
    events.sort_by_key(|e| (e.0, e.1));
    let n = events.len();
    // A doubly linked list over the events, so linearised operations can be lifted out
    // and put back.
    let mut next: Vec<usize> = (1..=n).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { n } else { i - 1 }).collect();
    let head = n; // sentinel
    next.push(0);
    prev.push(n - 1);
    let mut ret_pos = vec![usize::MAX; history.len()];
    for (pos, (_, _, ev)) in events.iter().enumerate() {
        if let Event::Return(i) = ev {
            ret_pos[*i] = pos;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, q) = (prev[x], next[x]);
        next[p] = q;
        prev[q] = p;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, q) = (prev[x], next[x]);
        next[p] = x;
        prev[q] = x;
    };
    // Completed operations not linearised yet: the history is linearizable once none is
    // left (operations of unknown outcome may stay out).
    let mut returns_left = history.iter().filter(|e| e.ret.is_some()).count();
    let words = history.len().div_ceil(64);
    let mut done = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, i64)> = HashSet::new();
    let mut stack: Vec<(usize, usize, i64)> = Vec::new();
    let mut state = initial;
    let mut x = next[head];
    loop {
        if returns_left == 0 {
            return true;
        }
        // At the end of the list, or at the completion of an operation not yet placed:
        // nothing more fits at this level, so undo the last choice.
        let Some(Event::Call(i)) = (x != head)
            .then(|| events[x].2)
            .filter(|e| matches!(e, Event::Call(_)))
        else {
            let Some((call_pos, i, old)) = stack.pop() else {
                return false;
            };
            state = old;
            done[i / 64] &= !(1 << (i % 64));
            if ret_pos[i] != usize::MAX {
                relink(&mut next, &mut prev, ret_pos[i]);
                returns_left += 1;
            }
            relink(&mut next, &mut prev, call_pos);
            x = next[call_pos];
            continue;
        };
        if let Some(s) = step(history[i].op, state) {
            let mut d = done.clone();
            d[i / 64] |= 1 << (i % 64);
            if cache.insert((d.clone(), s)) {
                stack.push((x, i, state));
                state = s;
                done = d;
                unlink(&mut next, &mut prev, x);
                if ret_pos[i] != usize::MAX {
                    unlink(&mut next, &mut prev, ret_pos[i]);
                    returns_left -= 1;
                }
                x = next[head];
                continue;
            }
        }
        x = next[x];
    }
}

/// Builds a history from `(op, call, ret)` in milliseconds after `t0` (`ret` < 0:
/// unknown outcome); for the checker's own tests.
pub fn history(t0: Instant, ops: &[(Op, u64, i64)]) -> Vec<Entry> {
    use std::time::Duration;
    ops.iter()
        .map(|(op, call, ret)| Entry {
            op: *op,
            call: t0 + Duration::from_millis(*call),
            ret: (*ret >= 0).then(|| t0 + Duration::from_millis(*ret as u64)),
        })
        .collect()
}
