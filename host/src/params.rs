//! Tracked session parameters: the values each client must always see, whichever server it lands on.
//!
//! PostgreSQL reports a few settings (`GUC_REPORT`) with ParameterStatus. pgwarden remembers, per client and
//! per server connection, the value of each tracked one; when a client is linked to a server whose values
//! differ, it sends `SET` first and hides the answers. The list is fixed for the life of the process
//! (PgBouncer's `track_extra_parameters` is not reloadable either), so values live in a small indexed array.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;

/// Parameters every client has tracked, in PostgreSQL's canonical spelling. The two read most come first
/// (values are found by walking the slots): every transaction reads `standard_conforming_strings`.
const ALWAYS_TRACKED: [&str; 5] = [
    "standard_conforming_strings",
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
];

/// The names of the tracked parameters; an index into it identifies a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    names: Vec<Box<str>>,
    /// The packed [`ParamValues`] with every value unknown, which each new set starts as (a copy of the
    /// pointer, not of the string).
    no_values: Arc<str>,
}

impl Tracked {
    /// Where `standard_conforming_strings` is, in every tracked set.
    pub const STANDARD_CONFORMING_STRINGS: usize = 0;
    /// Where `application_name` is, in every tracked set.
    pub const APPLICATION_NAME: usize = 1;

    /// The always-tracked set plus `track_extra_parameters`.
    pub fn new(extra: &[String]) -> Self {
        let mut names: Vec<Box<str>> = ALWAYS_TRACKED.iter().map(|s| Box::from(*s)).collect();
        for e in extra {
            let e = e.trim();
            if !e.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(e)) {
                names.push(canonical(e).into());
            }
        }
        let no_values = "\0".repeat(names.len().saturating_sub(1)).into();
        Self { names, no_values }
    }

    /// Index of a parameter by name, case-insensitively (GUC names are).
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.eq_ignore_ascii_case(name))
    }

    pub fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Whether a `standard_conforming_strings` value means on (only `off` turns it off; PostgreSQL reports
/// `on` or `off`).
pub fn standard_strings_on(value: &str) -> bool {
    !value.eq_ignore_ascii_case("off")
}

/// PostgreSQL's canonical spelling for the mixed-case reported GUCs, so our ParameterStatus matches the server's.
fn canonical(name: &str) -> &str {
    for known in [
        "DateStyle",
        "IntervalStyle",
        "TimeZone",
        "client_encoding",
        "application_name",
    ] {
        if known.eq_ignore_ascii_case(name) {
            return known;
        }
    }
    name
}

/// One value per tracked parameter; `None` when unknown.
///
/// Packed into one string, slot by slot: a slot is empty (unknown) or `=` and the value, and NUL (which no
/// parameter value can hold: the protocol ends them with it) separates the slots. Every client and server
/// keeps one, and values change rarely (a `SET` of a tracked parameter): one small allocation, where a
/// vector of optional strings took ~100 bytes and one more allocation per value. Shared, never changed in
/// place: clients of a pool that log in with the same values keep one copy ([`ParamValues::share`]), and a
/// `SET` makes the client a copy of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamValues {
    packed: Arc<str>,
}

impl ParamValues {
    pub fn new(tracked: &Tracked) -> Self {
        Self {
            packed: Arc::clone(&tracked.no_values),
        }
    }

    /// Each slot's value, in order.
    fn slots(&self) -> impl Iterator<Item = Option<&str>> {
        crate::protocol::nul_fields(&self.packed).map(|s| s.strip_prefix('='))
    }

    /// Packs `slots` anew.
    fn repack<'a>(slots: impl Iterator<Item = Option<&'a str>>) -> Arc<str> {
        shared_str(|packed| {
            for (i, slot) in slots.enumerate() {
                if i > 0 {
                    packed.push('\0');
                }
                if let Some(value) = slot {
                    debug_assert!(!value.contains('\0'), "a parameter value with a NUL");
                    packed.push('=');
                    packed.push_str(value);
                }
            }
        })
    }

    pub fn get(&self, index: usize) -> Option<&str> {
        self.slots().nth(index).flatten()
    }

    /// Sets a value; returns whether it changed.
    pub fn set(&mut self, index: usize, value: &str) -> bool {
        match self.slots().nth(index) {
            None => return false,
            Some(old) if old == Some(value) => return false,
            Some(_) => {}
        }
        self.packed = Self::repack(
            self.slots()
                .enumerate()
                .map(|(i, old)| if i == index { Some(value) } else { old }),
        );
        true
    }

    /// Sets many values at once, the later of two for one slot winning: one new copy, where
    /// [`ParamValues::set`] makes one per value (a login sets a dozen, from the pool's welcome and the
    /// startup packet). Slots out of range are ignored.
    pub fn set_many<'a>(&mut self, values: impl IntoIterator<Item = (usize, &'a str)>) {
        let packed = {
            // On the stack for the usual handful of tracked parameters (a login calls this).
            const INLINE: usize = 16;
            let n = self.slots().count();
            let mut inline = [None; INLINE];
            let mut spilled;
            let slots: &mut [Option<&str>] = if n <= INLINE {
                &mut inline[..n]
            } else {
                spilled = vec![None; n];
                &mut spilled
            };
            for (slot, value) in slots.iter_mut().zip(self.slots()) {
                *slot = value;
            }
            let mut changed = false;
            for (i, value) in values {
                if let Some(slot) = slots.get_mut(i)
                    && *slot != Some(value)
                {
                    *slot = Some(value);
                    changed = true;
                }
            }
            if !changed {
                return;
            }
            Self::repack(slots.iter().copied())
        };
        self.packed = packed;
    }

    /// Copies every known value of `other` over ours.
    pub fn merge_from(&mut self, other: &Self) {
        if other.slots().all(|v| v.is_none()) {
            return;
        }
        self.packed = Self::repack(
            self.slots()
                .zip(other.slots())
                .map(|(mine, theirs)| theirs.or(mine)),
        );
    }

    /// The `SET` statements that make a server with `server` values match `self` (the client's), or `None`
    /// when they already agree. Parameters the client has no value for are left alone.
    pub fn sync_sql(&self, server: &Self, tracked: &Tracked) -> Option<String> {
        if self.packed == server.packed {
            return None;
        }
        let mut sql = String::new();
        for (i, (want, have)) in self.slots().zip(server.slots()).enumerate() {
            let Some(want) = want else { continue };
            if have == Some(want) {
                continue;
            }
            let _ = write!(
                sql,
                "SET {}={};",
                quote_ident(tracked.name(i)),
                quote_literal(want)
            );
        }
        (!sql.is_empty()).then_some(sql)
    }

    /// Makes these values share `last`'s copy when they are the same, or become `last` when they are not:
    /// logins in a row with the same values (one application's clients) keep one copy between them.
    pub fn share(&mut self, last: &mut Option<Self>) {
        match last {
            Some(l) if *l == *self => self.packed = Arc::clone(&l.packed),
            _ => *last = Some(self.clone()),
        }
    }

    /// Iterates `(index, value)` over known values.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &str)> {
        self.slots()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i, v)))
    }
}

/// An `Arc<str>` built by `write` in a scratch string of the thread's: one allocation, the shared string's,
/// whatever the pushes (building a `String` and converting it takes two, more as it grows).
pub fn shared_str(write: impl FnOnce(&mut String)) -> Arc<str> {
    thread_local! {
        static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
    }
    SCRATCH.with_borrow_mut(|s| {
        s.clear();
        write(s);
        let shared = Arc::from(s.as_str());
        // Not kept large after an unusual one.
        s.shrink_to(1024);
        shared
    })
}

/// Quotes a SQL identifier when needed (mixed case, like `"DateStyle"`, is fine unquoted for SET since GUC
/// names are case-insensitive, so only characters outside `[a-z0-9_.]` force quotes).
pub fn quote_ident(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Quotes a SQL string literal so it reads the same whatever `standard_conforming_strings` is: backslashes
/// force the `E''` form with doubled backslashes.
pub fn quote_literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_names_are_case_insensitive_and_deduplicated() {
        let t = Tracked::new(&[
            "intervalstyle".into(),
            "TIMEZONE".into(),
            " search_path ".into(),
            String::new(),
        ]);
        assert_eq!(t.len(), 7);
        assert_eq!(t.index("datestyle"), Some(3));
        assert_eq!(t.index("Application_Name"), Some(Tracked::APPLICATION_NAME));
        assert_eq!(
            t.index("standard_conforming_strings"),
            Some(Tracked::STANDARD_CONFORMING_STRINGS)
        );
        assert_eq!(t.name(t.index("INTERVALSTYLE").unwrap()), "IntervalStyle");
        assert_eq!(t.name(t.index("search_path").unwrap()), "search_path");
        assert_eq!(t.index("work_mem"), None);
    }

    #[test]
    fn sync_sql_sets_only_differences() {
        let t = Tracked::new(&[]);
        let mut client = ParamValues::new(&t);
        let mut server = ParamValues::new(&t);
        assert_eq!(
            client.sync_sql(&server, &t),
            None,
            "client knows nothing: nothing to set"
        );
        client.set(t.index("TimeZone").unwrap(), "Europe/Berlin");
        client.set(t.index("application_name").unwrap(), "it's");
        server.set(t.index("TimeZone").unwrap(), "UTC");
        server.set(t.index("application_name").unwrap(), "it's");
        assert_eq!(
            client.sync_sql(&server, &t).as_deref(),
            Some("SET TimeZone='Europe/Berlin';")
        );
        server.merge_from(&client);
        assert_eq!(client.sync_sql(&server, &t), None);
        assert!(
            !client.set(t.index("TimeZone").unwrap(), "Europe/Berlin"),
            "unchanged"
        );
    }

    #[test]
    fn values_keep_unknown_empty_and_set_apart() {
        let t = Tracked::new(&["search_path".to_owned()]);
        let mut v = ParamValues::new(&t);
        assert_eq!(v.iter().count(), 0);
        let (app, path) = (
            t.index("application_name").unwrap(),
            t.index("search_path").unwrap(),
        );
        assert!(v.set(app, ""), "empty is a value");
        assert_eq!(v.get(app), Some(""));
        assert_eq!(v.get(path), None);
        assert!(v.set(path, "a, \"b=c\""));
        assert!(!v.set(path, "a, \"b=c\""), "unchanged");
        assert!(!v.set(t.len(), "x"), "no such slot");
        assert_eq!(v.get(t.len()), None);
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            [(app, ""), (path, "a, \"b=c\"")]
        );
        let mut other = ParamValues::new(&t);
        other.set(0, "UTF8");
        other.set(app, "svc");
        v.merge_from(&other);
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            [(0, "UTF8"), (app, "svc"), (path, "a, \"b=c\"")]
        );
    }

    #[test]
    fn logins_with_the_same_values_share_one_copy_and_a_set_makes_its_own() {
        let t = Tracked::new(&[]);
        let app = t.index("application_name").unwrap();
        let with = |name: &str| {
            let mut v = ParamValues::new(&t);
            v.set(0, "UTF8");
            v.set(app, name);
            v
        };
        let mut last = None;
        let mut a = with("svc");
        a.share(&mut last);
        let mut b = with("svc");
        b.share(&mut last);
        assert!(
            Arc::ptr_eq(&a.packed, &b.packed),
            "the same values: one copy"
        );
        let mut c = with("other");
        c.share(&mut last);
        assert!(!Arc::ptr_eq(&c.packed, &a.packed));
        assert_eq!(
            last.as_ref(),
            Some(&c),
            "the latest values are the ones shared next"
        );
        // A SET changes one client's values only.
        assert!(b.set(app, "renamed"));
        assert_eq!((a.get(app), b.get(app)), (Some("svc"), Some("renamed")));
    }

    #[test]
    fn many_values_set_at_once_are_set_as_one_by_one() {
        let t = Tracked::new(&["search_path".to_owned()]);
        let app = t.index("application_name").unwrap();
        let path = t.index("search_path").unwrap();
        let changes = [
            (0, "UTF8"),
            (app, "server default"),
            (path, "x"),
            (app, "mine"),
            (99, "none"),
        ];
        let mut one_by_one = ParamValues::new(&t);
        for (i, v) in changes {
            one_by_one.set(i, v);
        }
        let mut at_once = ParamValues::new(&t);
        at_once.set_many(changes);
        assert_eq!(at_once, one_by_one);
        assert_eq!(at_once.get(app), Some("mine"), "the later value wins");
        let before = Arc::clone(&at_once.packed);
        at_once.set_many([(0, "UTF8")]);
        assert!(
            Arc::ptr_eq(&before, &at_once.packed),
            "nothing changed: no new copy"
        );
    }

    #[test]
    fn many_values_past_the_inline_slots_and_new_sets_share_the_empty_one() {
        // More tracked parameters than `set_many` keeps on its stack.
        let extra: Vec<String> = (0..30).map(|i| format!("x.p{i}")).collect();
        let t = Tracked::new(&extra);
        assert_eq!(t.len(), 35);
        let (a, b) = (ParamValues::new(&t), ParamValues::new(&t));
        assert!(Arc::ptr_eq(&a.packed, &b.packed), "one empty copy");
        assert!(a.iter().next().is_none());
        let last = t.index("x.p29").unwrap();
        let changes = [(0, "UTF8"), (last, "z"), (20, ""), (last, "zz")];
        let mut one_by_one = a.clone();
        for (i, v) in changes {
            one_by_one.set(i, v);
        }
        let mut at_once = b;
        at_once.set_many(changes);
        assert_eq!(at_once, one_by_one);
        assert_eq!(
            at_once.iter().collect::<Vec<_>>(),
            [(0, "UTF8"), (20, ""), (last, "zz")]
        );
        assert_eq!(a.get(0), None, "the shared empty set is untouched");
    }

    #[test]
    fn shared_strings_are_built_whole() {
        let long = "y".repeat(5000);
        assert_eq!(&*shared_str(|s| s.push_str(&long)), long.as_str());
        // The scratch is cleared between uses.
        assert_eq!(&*shared_str(|s| s.push('a')), "a");
        assert_eq!(&*shared_str(|_| {}), "");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(quote_literal(r"a\b'"), r"E'a\\b'''");
        assert_eq!(quote_ident("DateStyle"), "DateStyle");
        assert_eq!(quote_ident("my\"guc"), "\"my\"\"guc\"");
        assert_eq!(quote_ident("1x"), "\"1x\"");
    }
}
