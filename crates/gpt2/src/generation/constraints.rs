//! The constraints of constrained beam search (`force_words_ids`), as transformers 4.46's
//! beam_constraints.py defines them: a phrase that must appear, or a disjunction of phrases of
//! which one must appear, and the state of all of them along one hypothesis.
//!
//! transformers' stateful copy of a disjunctive constraint shares its progress list with the
//! original (Python aliasing); the bank a candidate is ranked by depends on that, so the list is
//! shared here too (`Rc<RefCell<..>>`).

use std::cell::RefCell;
use std::rc::Rc;

use crate::error::{Error, Result};

/// A trie over the alternatives, children in insertion order (Python dict order).
#[derive(Debug)]
pub(crate) struct Trie {
    nodes: Vec<Vec<(u32, usize)>>,
    max_height: usize,
}

impl Trie {
    fn new(words: &[Vec<u32>]) -> Result<Trie> {
        let mut nodes: Vec<Vec<(u32, usize)>> = vec![Vec::new()];
        for word in words {
            let mut at = 0;
            for &t in word {
                at = match nodes[at].iter().find(|(tok, _)| *tok == t) {
                    Some(&(_, child)) => child,
                    None => {
                        nodes.push(Vec::new());
                        let child = nodes.len() - 1;
                        nodes[at].push((t, child));
                        child
                    }
                };
            }
        }
        let leaves = nodes.iter().filter(|c| c.is_empty()).count();
        if leaves != words.len() {
            return Err(Error::Input(format!(
                "force_words_ids: no alternative may be a prefix of another ({words:?})"
            )));
        }
        let max_height = words.iter().map(Vec::len).max().unwrap_or(0);
        Ok(Trie { nodes, max_height })
    }

    fn next_tokens(&self, seq: &[u32]) -> Vec<u32> {
        let mut at = 0;
        for t in seq {
            match self.nodes[at].iter().find(|(tok, _)| tok == t) {
                Some(&(_, child)) => at = child,
                None => return Vec::new(),
            }
        }
        self.nodes[at].iter().map(|&(t, _)| t).collect()
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Constraint {
    Phrasal {
        ids: Rc<Vec<u32>>,
        fulfilled: isize,
        completed: bool,
    },
    Disjunctive {
        trie: Rc<Trie>,
        seq: Rc<RefCell<Vec<u32>>>,
        completed: bool,
    },
}

impl Constraint {
    /// One `force_words_ids` entry: a list of ids (a phrase) or a list of lists (alternatives).
    pub fn from_json(v: &serde_json::Value) -> Result<Constraint> {
        let bad = || {
            Error::Input(format!(
                "force_words_ids entries must be a list of token ids or a list of such lists, not {v}"
            ))
        };
        let ids = |v: &serde_json::Value| -> Result<Vec<u32>> {
            let list = v.as_array().filter(|a| !a.is_empty()).ok_or_else(bad)?;
            list.iter()
                .map(|x| {
                    x.as_u64()
                        .and_then(|x| u32::try_from(x).ok())
                        .ok_or_else(bad)
                })
                .collect()
        };
        let list = v.as_array().filter(|a| !a.is_empty()).ok_or_else(bad)?;
        if list[0].is_array() {
            let words = list.iter().map(ids).collect::<Result<Vec<_>>>()?;
            Ok(Constraint::Disjunctive {
                trie: Rc::new(Trie::new(&words)?),
                seq: Rc::new(RefCell::new(Vec::new())),
                completed: false,
            })
        } else {
            Ok(Constraint::Phrasal {
                ids: Rc::new(ids(v)?),
                fulfilled: -1,
                completed: false,
            })
        }
    }

    fn seqlen(&self) -> usize {
        match self {
            Constraint::Phrasal { ids, .. } => ids.len(),
            Constraint::Disjunctive { trie, .. } => trie.max_height,
        }
    }

    /// A copy with no progress (`copy(stateful=False)`).
    fn fresh(&self) -> Constraint {
        match self {
            Constraint::Phrasal { ids, .. } => Constraint::Phrasal {
                ids: ids.clone(),
                fulfilled: -1,
                completed: false,
            },
            Constraint::Disjunctive { trie, .. } => Constraint::Disjunctive {
                trie: trie.clone(),
                seq: Rc::new(RefCell::new(Vec::new())),
                completed: false,
            },
        }
    }

    /// `copy(stateful=True)`: a disjunctive constraint's progress list stays shared.
    fn stateful_copy(&self) -> Constraint {
        self.clone()
    }

    fn advance(&self) -> Vec<u32> {
        match self {
            Constraint::Phrasal {
                ids,
                fulfilled,
                completed,
            } => {
                if *completed {
                    Vec::new()
                } else {
                    vec![ids[(*fulfilled + 1) as usize]]
                }
            }
            Constraint::Disjunctive { trie, seq, .. } => trie.next_tokens(&seq.borrow()),
        }
    }

    fn does_advance(&self, t: u32) -> bool {
        match self {
            Constraint::Phrasal {
                ids,
                fulfilled,
                completed,
            } => !*completed && ids.get((*fulfilled + 1) as usize) == Some(&t),
            Constraint::Disjunctive { trie, seq, .. } => {
                trie.next_tokens(&seq.borrow()).contains(&t)
            }
        }
    }

    /// (stepped, completed, reset)
    fn update(&mut self, t: u32) -> (bool, bool, bool) {
        let advances = self.does_advance(t);
        match self {
            Constraint::Phrasal {
                ids,
                fulfilled,
                completed,
            } => {
                if advances {
                    *fulfilled += 1;
                    let done = *fulfilled as usize == ids.len() - 1;
                    *completed = done;
                    (true, done, false)
                } else {
                    // transformers' reset sets fulfilled_idx to 0 (not -1); the object is
                    // discarded right after (a fresh copy goes back to pending), so it does not
                    // matter which.
                    *completed = false;
                    *fulfilled = 0;
                    (false, false, true)
                }
            }
            Constraint::Disjunctive {
                trie,
                seq,
                completed,
            } => {
                let (stepped, reset) = if advances {
                    seq.borrow_mut().push(t);
                    (true, false)
                } else {
                    *seq = Rc::new(RefCell::new(Vec::new()));
                    (false, true)
                };
                let done = trie.next_tokens(&seq.borrow()).is_empty();
                *completed = done;
                (stepped, done, reset)
            }
        }
    }

    fn remaining(&self) -> isize {
        match self {
            Constraint::Phrasal { ids, fulfilled, .. } => ids.len() as isize - (*fulfilled + 1),
            Constraint::Disjunctive {
                trie,
                seq,
                completed,
            } => {
                if *completed {
                    0
                } else {
                    trie.max_height as isize - seq.borrow().len() as isize
                }
            }
        }
    }
}

/// ConstraintListState: which constraints a hypothesis has completed, is in the middle of, or
/// has still to start.
#[derive(Debug, Clone)]
pub(crate) struct ConstraintState {
    templates: Rc<Vec<Constraint>>,
    max_seqlen: isize,
    pub completed: bool,
    complete: Vec<Constraint>,
    inprogress: Option<Constraint>,
    pending: Vec<Constraint>,
}

impl ConstraintState {
    pub fn new(templates: Rc<Vec<Constraint>>) -> ConstraintState {
        let max_seqlen = templates.iter().map(Constraint::seqlen).max().unwrap_or(0) as isize;
        let pending = templates.iter().map(Constraint::fresh).collect();
        ConstraintState {
            templates,
            max_seqlen,
            completed: false,
            complete: Vec::new(),
            inprogress: None,
            pending,
        }
    }

    /// The state after reading `tokens` from the start.
    pub fn after(templates: &Rc<Vec<Constraint>>, tokens: &[u32]) -> ConstraintState {
        let mut s = ConstraintState::new(templates.clone());
        for &t in tokens {
            s.add(t);
            if s.completed {
                break;
            }
        }
        s
    }

    /// How far along this hypothesis is (the "bank" candidates are grouped by).
    pub fn bank(&self) -> isize {
        let add = self
            .inprogress
            .as_ref()
            .map_or(0, |c| self.max_seqlen - c.remaining());
        self.complete.len() as isize * self.max_seqlen + add
    }

    /// Tokens that would make progress on some constraint.
    pub fn advance(&self) -> Vec<u32> {
        match &self.inprogress {
            None => self.pending.iter().flat_map(Constraint::advance).collect(),
            Some(c) => c.advance(),
        }
    }

    pub fn add(&mut self, t: u32) {
        if self.completed {
            return;
        }
        if let Some(mut c) = self.inprogress.take() {
            let (_, complete, reset) = c.update(t);
            if reset {
                self.pending.push(c.fresh());
            } else if complete {
                self.complete.push(c);
                if self.pending.is_empty() {
                    self.completed = true;
                }
            } else {
                self.inprogress = Some(c);
            }
            return;
        }
        for i in 0..self.pending.len() {
            if !self.pending[i].does_advance(t) {
                continue;
            }
            let mut c = self.pending.remove(i);
            let (stepped, complete, _) = c.update(t);
            if complete {
                self.complete.push(c);
            } else if stepped {
                self.inprogress = Some(c);
            }
            if self.pending.is_empty() && self.inprogress.is_none() {
                self.completed = true;
            }
            break;
        }
    }

    /// `copy(stateful=True)`.
    pub fn stateful_copy(&self) -> ConstraintState {
        ConstraintState {
            templates: self.templates.clone(),
            max_seqlen: self.max_seqlen,
            completed: false,
            complete: self
                .complete
                .iter()
                .map(Constraint::stateful_copy)
                .collect(),
            inprogress: self.inprogress.as_ref().map(Constraint::stateful_copy),
            pending: self.pending.iter().map(Constraint::fresh).collect(),
        }
    }
}
