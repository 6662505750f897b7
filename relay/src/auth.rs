//! The sign-in rules and the crypto behind them (SPEC S1–S4, S6), kept free
//! of I/O so that each rule is a plain function with its own tests.
//!
//! - Names and passwords: [`check_name`] and [`check_password`] answer with
//!   the sentence the sign-in form shows; [`name_key`] is what makes names
//!   unique ignoring case.
//! - Passwords are stored as argon2id PHC strings ([`hash_password`],
//!   [`verify_password`]); the clear text is never kept, and input longer than
//!   [`MAX_PASSWORD_BYTES`] is never hashed, so nobody can make the relay
//!   spend its CPU on a megabyte "password".
//! - Session tokens ([`new_session_token`]) are 256 random bits from the OS;
//!   the store only ever sees their SHA-256 ([`TokenHash::of`]), so a copy of
//!   the database does not let anyone sign in.
//! - [`Throttle`] slows down password guessing per name and per client
//!   address. Time is passed in, so it is tested without clocks or sleeps.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use argon2::{Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::store::TokenHash;

/// The shortest name, in characters (SPEC S1).
pub const MIN_NAME_CHARS: usize = 3;
/// The longest name, in characters (SPEC S1).
pub const MAX_NAME_CHARS: usize = 32;
/// The shortest password, in characters (SPEC S1).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password, in bytes: argon2 is never run on unbounded input.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Random bytes in a session token: 256 bits, twice SPEC S4's minimum.
pub const SESSION_TOKEN_BYTES: usize = 32;

/// The sentence shown when a name uses a character outside the rule.
const NAME_CHARS_RULE: &str = "Names use only the letters a–z and A–Z, digits, _ - and .";

/// Checks a name against SPEC S1: 3–32 characters of ASCII letters, digits,
/// `_`, `-` and `.`. Ok, or a sentence for the sign-in form saying which rule
/// the name breaks.
pub fn check_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars < MIN_NAME_CHARS {
        return Err(format!(
            "Names are at least {MIN_NAME_CHARS} characters: letters, digits, _ - and ."
        ));
    }
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "Names are at most {MAX_NAME_CHARS} characters: letters, digits, _ - and ."
        ));
    }
    match name.chars().find(|c| !is_name_char(*c)) {
        // `{c:?}` quotes the character and escapes invisible ones, so a
        // stray space or control character is visible in the message.
        Some(c) => Err(format!("{NAME_CHARS_RULE} ({c:?} is not allowed).")),
        None => Ok(()),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Checks a new password against SPEC S1: at least 8 characters, and no more
/// than [`MAX_PASSWORD_BYTES`]. Ok, or a sentence for the sign-in form.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "Passwords are at most {MAX_PASSWORD_BYTES} bytes (as many plain letters, fewer accented ones or symbols)."
        ));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "Passwords are at least {MIN_PASSWORD_CHARS} characters."
        ));
    }
    Ok(())
}

/// The key that makes names unique ignoring case: the name in ASCII lower
/// case (names are ASCII, see [`check_name`]).
pub fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Hashes a password with argon2id (the crate's defaults: 19 MiB, 2 passes,
/// the OWASP recommendation) and a fresh 16-byte random salt, into a PHC
/// string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
pub fn hash_password(password: &str) -> Result<String, String> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "refusing to hash a password over {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| format!("could not hash the password: {e}"))
}

/// The most memory a stored hash may ask [`verify_password`] to use, in KiB
/// (64 MiB; hashes made here use 19 MiB).
const MAX_VERIFY_M_COST_KIB: u32 = 64 * 1024;
/// The most passes a stored hash may ask [`verify_password`] to make.
const MAX_VERIFY_T_COST: u32 = 16;
/// The most lanes a stored hash may ask [`verify_password`] to use.
const MAX_VERIFY_P_COST: u32 = 8;

/// True if `password` matches the argon2id PHC string `phc`. False for a
/// wrong password, an over-long one, and a PHC string that is malformed, not
/// argon2id, or asks for far more memory or time than [`hash_password`]
/// uses (so a damaged row cannot make the relay allocate gigabytes).
pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return false;
    }
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.m_cost() > MAX_VERIFY_M_COST_KIB
        || params.t_cost() > MAX_VERIFY_T_COST
        || params.p_cost() > MAX_VERIFY_P_COST
    {
        return false;
    }
    // Compares in constant time; uses the parameters stored in the hash.
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

/// A new session token: [`SESSION_TOKEN_BYTES`] random bytes from the OS,
/// base64url without padding (43 characters, safe in a cookie), and the hash
/// the store keeps instead of it.
///
/// # Panics
/// If the operating system cannot provide random bytes. Nothing sensible can
/// be done without them, and a predictable token would be worse.
pub fn new_session_token() -> (String, TokenHash) {
    let mut bytes = [0u8; SESSION_TOKEN_BYTES];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = TokenHash::of(&token);
    (token, hash)
}

impl TokenHash {
    /// The SHA-256 of a session token, as the store keeps it. A plain hash is
    /// enough (no salt, no argon2): the token is 256 random bits, so there is
    /// nothing to guess.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }
}

/// User colours (SPEC S6), defined with the protocol: rows of the online
/// lists carry them as indexes.
pub use shared::protocol::PALETTE;

/// A colour for a new account, picked at random from [`PALETTE`].
pub fn color_for_new_user() -> String {
    // A colour needs no secrecy: if the OS has no random bytes, the first
    // colour will do.
    let pick = getrandom::u32().unwrap_or(0) as usize % PALETTE.len();
    PALETTE[pick].to_string()
}

/// Failed sign-ins allowed per name within [`DEFAULT_THROTTLE_WINDOW`].
pub const DEFAULT_FAILURES_PER_NAME: u32 = 5;
/// Failed sign-ins allowed per client address within [`DEFAULT_THROTTLE_WINDOW`].
pub const DEFAULT_FAILURES_PER_ADDR: u32 = 20;
/// How long failures count against a name or an address.
pub const DEFAULT_THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The most names, and separately the most addresses, a [`Throttle`]
/// remembers. Someone spraying made-up names or addresses fills the table
/// only up to here; then it forgets what matters least (see [`Throttle`]).
pub const MAX_THROTTLE_ENTRIES: usize = 10_000;

/// Bytes of a name key the throttle keeps. Valid names are ASCII and at most
/// [`MAX_NAME_CHARS`] long, so longer keys name no account and are cut short
/// rather than stored whole.
const MAX_THROTTLE_KEY_BYTES: usize = MAX_NAME_CHARS;

/// Throttles failed sign-ins per name and per client address (SPEC S3).
///
/// Each name and each address has a window that opens at its first failure
/// and lasts `window`; once it has seen the limit of failures, sign-ins for
/// that name or from that address wait until the window closes. A success
/// forgets the name's failures but not the address's, so one good account
/// does not reset the count of someone guessing others' passwords.
///
/// IPv6 addresses count per /64, the block one home or host usually gets;
/// otherwise a single client could pick a fresh address for every guess.
///
/// Both tables hold at most [`MAX_THROTTLE_ENTRIES`]. When one is full, it
/// forgets closed windows, then, if still more than half full, the entries
/// with the fewest failures (oldest first), down to half: a name close to
/// its limit outlives a spray of one-off guesses. Each clean-up is O(n) and
/// happens at most once per n/2 new entries.
#[derive(Debug)]
pub struct Throttle {
    per_name: u32,
    per_addr: u32,
    window: Duration,
    names: HashMap<String, Failures>,
    addrs: HashMap<IpAddr, Failures>,
}

/// Failures of one name or address in its current window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// When the window opened: the first failure in it.
    since: Instant,
}

impl Failures {
    /// How long until the window closes; None once it has.
    fn remaining(&self, window: Duration, now: Instant) -> Option<Duration> {
        window
            .checked_sub(now.saturating_duration_since(self.since))
            .filter(|left| !left.is_zero())
    }

    /// How long to wait, if `limit` failures have been seen in an open window.
    fn wait(&self, limit: u32, window: Duration, now: Instant) -> Option<Duration> {
        if self.count >= limit {
            self.remaining(window, now)
        } else {
            None
        }
    }
}

impl Throttle {
    /// A throttle allowing `per_name` failures per name and `per_addr` per
    /// address within `window` (limits below 1 count as 1).
    pub fn new(per_name: u32, per_addr: u32, window: Duration) -> Self {
        Throttle {
            per_name: per_name.max(1),
            per_addr: per_addr.max(1),
            window,
            names: HashMap::new(),
            addrs: HashMap::new(),
        }
    }

    /// Ok, or how long to wait (for the HTTP 429 `Retry-After`; round it
    /// up to whole seconds) if the name or the address has had its limit of
    /// failures within the window. The longer wait wins.
    pub fn check(&self, name_key: &str, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let by_name = self
            .names
            .get(throttle_key(name_key))
            .and_then(|f| f.wait(self.per_name, self.window, now));
        let by_addr = self
            .addrs
            .get(&addr_key(addr))
            .and_then(|f| f.wait(self.per_addr, self.window, now));
        match by_name.max(by_addr) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Counts a failed sign-in against the name and the address.
    pub fn record_failure(&mut self, name_key: &str, addr: IpAddr, now: Instant) {
        let window = self.window;
        let key = throttle_key(name_key);
        if !self.names.contains_key(key) {
            make_room(&mut self.names, window, now);
        }
        bump(
            self.names.entry(key.to_string()).or_insert(Failures {
                count: 0,
                since: now,
            }),
            window,
            now,
        );

        let addr = addr_key(addr);
        if !self.addrs.contains_key(&addr) {
            make_room(&mut self.addrs, window, now);
        }
        bump(
            self.addrs.entry(addr).or_insert(Failures {
                count: 0,
                since: now,
            }),
            window,
            now,
        );
    }

    /// A successful sign-in: forgets the name's failures (the address's
    /// stay, see [`Throttle`]).
    pub fn record_success(&mut self, name_key: &str, _addr: IpAddr) {
        self.names.remove(throttle_key(name_key));
    }
}

impl Default for Throttle {
    /// [`DEFAULT_FAILURES_PER_NAME`] per name, [`DEFAULT_FAILURES_PER_ADDR`]
    /// per address, in [`DEFAULT_THROTTLE_WINDOW`].
    fn default() -> Self {
        Throttle::new(
            DEFAULT_FAILURES_PER_NAME,
            DEFAULT_FAILURES_PER_ADDR,
            DEFAULT_THROTTLE_WINDOW,
        )
    }
}

/// One more failure; a closed window reopens at `now`.
fn bump(failures: &mut Failures, window: Duration, now: Instant) {
    if failures.remaining(window, now).is_none() {
        *failures = Failures {
            count: 0,
            since: now,
        };
    }
    failures.count = failures.count.saturating_add(1);
}

/// Keeps a table under [`MAX_THROTTLE_ENTRIES`] before an insert: see
/// [`Throttle`] for what is forgotten.
fn make_room<K: Eq + std::hash::Hash>(
    table: &mut HashMap<K, Failures>,
    window: Duration,
    now: Instant,
) {
    if table.len() < MAX_THROTTLE_ENTRIES {
        return;
    }
    table.retain(|_, f| f.remaining(window, now).is_some());
    let keep = MAX_THROTTLE_ENTRIES / 2;
    if table.len() <= keep {
        return;
    }
    // Keep the `keep` most important: more failures first, then newer.
    let mut entries: Vec<(K, Failures)> = table.drain().collect();
    entries.select_nth_unstable_by(keep, |(_, a), (_, b)| {
        (b.count, b.since).cmp(&(a.count, a.since))
    });
    entries.truncate(keep);
    table.extend(entries);
}

/// The name key as the throttle stores it: at most
/// [`MAX_THROTTLE_KEY_BYTES`], cut at a character boundary.
pub(crate) fn throttle_key(name_key: &str) -> &str {
    if name_key.len() <= MAX_THROTTLE_KEY_BYTES {
        return name_key;
    }
    let end = (0..=MAX_THROTTLE_KEY_BYTES)
        .rev()
        .find(|&i| name_key.is_char_boundary(i))
        .unwrap_or(0);
    &name_key[..end]
}

/// The address as the throttle counts it: IPv4 as is (also when mapped into
/// IPv6), IPv6 by its /64 block.
pub(crate) fn addr_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let block = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(block))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    // ---- names and passwords (SPEC S1) ----

    #[test]
    fn names_of_3_to_32_allowed_characters_pass() {
        for name in ["abc", "Bob", "A_b-c.9", "...", &"x".repeat(MAX_NAME_CHARS)] {
            assert_eq!(check_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn short_names_say_the_minimum() {
        for name in ["", "ab", "éé"] {
            let why = check_name(name).unwrap_err();
            assert!(why.contains("at least 3 characters"), "{name:?}: {why}");
        }
    }

    #[test]
    fn long_names_say_the_maximum() {
        for name in ["x".repeat(33), "é".repeat(33), "x".repeat(100_000)] {
            let why = check_name(&name).unwrap_err();
            assert!(why.contains("at most 32 characters"), "{why}");
        }
    }

    #[test]
    fn names_with_other_characters_name_the_culprit() {
        for (name, culprit) in [
            ("bob smith", "' '"),
            ("bob!", "'!'"),
            ("bob@example", "'@'"),
            ("tab\there", "'\\t'"),
            ("nul\0nul", "'\\0'"),
        ] {
            let why = check_name(name).unwrap_err();
            assert!(why.contains("letters a–z and A–Z, digits"), "{why}");
            assert!(why.contains(culprit), "{name:?}: {why}");
        }
    }

    #[test]
    fn unicode_letters_are_not_name_characters() {
        // Letters outside ASCII look alike across scripts ("аdmin" with a
        // Cyrillic а), and case folding them is not ASCII lower-casing.
        for (name, culprit) in [("jürgen", "'ü'"), ("аdmin", "'а'"), ("名前名前", "'名'")]
        {
            let why = check_name(name).unwrap_err();
            assert!(why.contains(culprit), "{name:?}: {why}");
        }
    }

    #[test]
    fn name_keys_ignore_ascii_case_only() {
        assert_eq!(name_key("Bob.Smith_1"), "bob.smith_1");
        assert_eq!(name_key("BOB"), name_key("bob"));
        assert_eq!(
            name_key("ÉCOLE"),
            "École",
            "non-ASCII letters are left alone"
        );
    }

    #[test]
    fn passwords_need_8_characters_and_at_most_1024_bytes() {
        assert_eq!(check_password("12345678"), Ok(()));
        assert_eq!(
            check_password(&"é".repeat(8)),
            Ok(()),
            "characters, not bytes"
        );
        assert_eq!(check_password(&"x".repeat(MAX_PASSWORD_BYTES)), Ok(()));
        for short in ["", "1234567", &"é".repeat(7)] {
            let why = check_password(short).unwrap_err();
            assert!(why.contains("at least 8 characters"), "{short:?}: {why}");
        }
        let why = check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).unwrap_err();
        assert!(why.contains("at most 1024 bytes"), "{why}");
        let why = check_password(&"é".repeat(513)).unwrap_err();
        assert!(why.contains("at most 1024 bytes"), "{why}");
    }

    // ---- password hashes (SPEC S2) ----

    #[test]
    fn hashes_are_salted_argon2id_and_verify() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct horsE", &phc));
        assert!(!verify_password("", &phc));
        let again = hash_password("correct horse").unwrap();
        assert_ne!(phc, again, "a fresh salt every time");
        assert!(verify_password("correct horse", &again));
    }

    #[test]
    fn over_long_passwords_are_never_hashed() {
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(hash_password(&long).is_err());
        let phc = hash_password("x").unwrap();
        assert!(!verify_password(&long, &phc));
    }

    #[test]
    fn malformed_or_foreign_hashes_verify_false() {
        let phc = hash_password("password1").unwrap();
        // The same password under argon2i: not what the relay writes.
        let argon2i = argon2::Argon2::new(
            argon2::Algorithm::Argon2i,
            argon2::Version::V0x13,
            Params::default(),
        )
        .hash_password(b"password1")
        .unwrap()
        .to_string();
        // A valid hash of "password1" that asks for 4 TiB of memory.
        let greedy = phc.replace("m=19456", "m=4294967295");
        assert_ne!(greedy, phc);
        for bad in [
            "",
            "password1",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            &phc[..phc.len() - 5],
            &format!("{phc}$extra"),
            &phc.replace("argon2id", "argon2xx"),
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
            &argon2i,
            &greedy,
            &phc.replace("t=2", "t=4000000"),
            "$argon2id$v=19$m=19456,t=2,p=1$\u{0}\u{ffff}$é",
        ] {
            assert!(!verify_password("password1", bad), "{bad:?}");
        }
    }

    // ---- session tokens (SPEC S4) ----

    #[test]
    fn tokens_are_256_random_bits_in_base64url() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let (token, hash) = new_session_token();
            assert_eq!(token.len(), 43, "{token}");
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{token}"
            );
            assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap().len(), 32);
            assert_eq!(TokenHash::of(&token), hash);
            assert!(seen.insert(token), "a token came up twice");
        }
    }

    #[test]
    fn token_hash_is_sha256() {
        // FIPS 180-2's test vector for "abc".
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hex: String = TokenHash::of("abc")
            .0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, expected);
        assert_ne!(TokenHash::of("abc"), TokenHash::of("abd"));
    }

    // ---- colours (SPEC S6) ----

    /// WCAG 2 relative luminance of a "#rrggbb" colour.
    fn luminance(color: &str) -> f64 {
        assert!(color.len() == 7 && color.starts_with('#'), "{color}");
        let channel = |at: usize| {
            let c = f64::from(u8::from_str_radix(&color[at..at + 2], 16).unwrap()) / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
    }

    fn contrast(a: &str, b: &str) -> f64 {
        let (la, lb) = (luminance(a), luminance(b));
        (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
    }

    #[test]
    fn the_contrast_helper_matches_known_values() {
        assert!((contrast("#000000", "#ffffff") - 21.0).abs() < 1e-9);
        assert!((contrast("#777777", "#ffffff") - 4.48).abs() < 0.01);
    }

    #[test]
    fn every_palette_colour_is_readable_on_the_light_backgrounds() {
        assert!(PALETTE.len() >= 10, "enough hues to tell people apart");
        let distinct: HashSet<_> = PALETTE.iter().map(|c| c.to_ascii_lowercase()).collect();
        assert_eq!(distinct.len(), PALETTE.len(), "no colour twice");
        for color in PALETTE {
            for background in ["#ffffff", "#f7f7f8"] {
                let ratio = contrast(color, background);
                assert!(ratio >= 4.5, "{color} on {background}: {ratio:.2}:1");
            }
        }
    }

    #[test]
    fn new_users_get_palette_colours_and_not_always_the_same() {
        let picked: HashSet<String> = (0..200).map(|_| color_for_new_user()).collect();
        assert!(
            picked.iter().all(|c| PALETTE.contains(&c.as_str())),
            "{picked:?}"
        );
        assert!(picked.len() > 1, "{picked:?}");
    }

    // ---- throttle (SPEC S3) ----

    const WINDOW: Duration = Duration::from_secs(60);

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_name_is_blocked_after_its_limit_until_the_window_closes() {
        let mut throttle = Throttle::new(3, 100, WINDOW);
        let t0 = Instant::now();
        for (i, addr) in [ip(1), ip(2), ip(3)].into_iter().enumerate() {
            assert_eq!(throttle.check("bob", addr, t0 + secs(i as u64)), Ok(()));
            throttle.record_failure("bob", addr, t0 + secs(i as u64));
        }
        // Blocked from any address; the wait counts from the first failure.
        let wait = throttle.check("bob", ip(9), t0 + secs(2)).unwrap_err();
        assert_eq!(wait, secs(58));
        assert!(wait <= WINDOW);
        let later = throttle.check("bob", ip(9), t0 + secs(30)).unwrap_err();
        assert_eq!(later, secs(30), "the wait shrinks as time passes");
        let last = throttle
            .check("bob", ip(9), t0 + WINDOW - Duration::from_millis(1))
            .unwrap_err();
        assert_eq!(last, Duration::from_millis(1));
        assert_eq!(throttle.check("bob", ip(9), t0 + WINDOW), Ok(()));
        // Other names are not affected.
        assert_eq!(throttle.check("alice", ip(1), t0 + secs(2)), Ok(()));
    }

    #[test]
    fn a_new_window_opens_after_the_old_one_closes() {
        let mut throttle = Throttle::new(2, 100, WINDOW);
        let t0 = Instant::now();
        throttle.record_failure("bob", ip(1), t0);
        // One failure in the old window and one in the new: not two in one.
        throttle.record_failure("bob", ip(1), t0 + WINDOW + secs(1));
        assert_eq!(throttle.check("bob", ip(1), t0 + WINDOW + secs(1)), Ok(()));
        throttle.record_failure("bob", ip(1), t0 + WINDOW + secs(2));
        assert_eq!(
            throttle.check("bob", ip(1), t0 + WINDOW + secs(2)),
            Err(WINDOW - secs(1))
        );
    }

    #[test]
    fn an_address_is_blocked_after_its_limit_whatever_the_names() {
        let mut throttle = Throttle::new(100, 3, WINDOW);
        let t0 = Instant::now();
        for name in ["ann", "ben", "cat"] {
            throttle.record_failure(name, ip(1), t0);
        }
        assert_eq!(throttle.check("dan", ip(1), t0 + secs(10)), Err(secs(50)));
        assert_eq!(throttle.check("ann", ip(2), t0 + secs(10)), Ok(()));
        assert_eq!(throttle.check("dan", ip(1), t0 + WINDOW), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64_block_and_mapped_ipv4_as_ipv4() {
        let mut throttle = Throttle::new(100, 2, WINDOW);
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other_block: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        throttle.record_failure("ann", a, t0);
        throttle.record_failure("ben", b, t0);
        assert!(throttle.check("cat", a, t0).is_err());
        assert_eq!(throttle.check("cat", other_block, t0), Ok(()));

        let v4 = ip(7);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        throttle.record_failure("ann", v4, t0);
        throttle.record_failure("ben", mapped, t0);
        assert!(throttle.check("cat", v4, t0).is_err());
    }

    #[test]
    fn the_longer_wait_wins() {
        let mut throttle = Throttle::new(1, 1, WINDOW);
        let t0 = Instant::now();
        throttle.record_failure("bob", ip(1), t0);
        throttle.record_failure("ann", ip(2), t0 + secs(20));
        // bob's window closes at 60 s, ip(2)'s at 80 s.
        assert_eq!(throttle.check("bob", ip(2), t0 + secs(30)), Err(secs(50)));
    }

    #[test]
    fn success_forgets_the_name_but_not_the_address() {
        let mut throttle = Throttle::new(3, 4, WINDOW);
        let t0 = Instant::now();
        throttle.record_failure("bob", ip(1), t0);
        throttle.record_failure("bob", ip(1), t0);
        throttle.record_success("bob", ip(1));
        throttle.record_failure("bob", ip(2), t0);
        throttle.record_failure("bob", ip(2), t0);
        assert_eq!(
            throttle.check("bob", ip(3), t0),
            Ok(()),
            "2 since the success"
        );

        throttle.record_failure("bob", ip(2), t0);
        assert!(throttle.check("bob", ip(3), t0).is_err());
        throttle.record_success("bob", ip(3));
        assert_eq!(throttle.check("bob", ip(3), t0), Ok(()));

        // ip(2) had 3 failures; one more blocks it, success or not.
        throttle.record_failure("ann", ip(2), t0);
        throttle.record_success("ann", ip(2));
        assert!(throttle.check("zed", ip(2), t0).is_err());
    }

    #[test]
    fn zero_limits_count_as_one_and_long_keys_are_cut() {
        let mut throttle = Throttle::new(0, 0, WINDOW);
        let t0 = Instant::now();
        assert_eq!(throttle.check("bob", ip(1), t0), Ok(()));
        throttle.record_failure(&"é".repeat(1_000_000), ip(1), t0);
        assert!(throttle
            .names
            .keys()
            .all(|k| k.len() <= MAX_THROTTLE_KEY_BYTES));
        assert!(throttle.check(&"é".repeat(50), ip(2), t0).is_err());
    }

    #[test]
    fn the_tables_stay_bounded_under_a_million_made_up_names() {
        let mut throttle = Throttle::new(5, 20, WINDOW);
        let t0 = Instant::now();
        for _ in 0..5 {
            throttle.record_failure("alice", ip(1), t0);
        }
        for i in 0..1_000_000u32 {
            let name = format!("spray{i}");
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let now = t0 + Duration::from_micros(u64::from(i));
            throttle.record_failure(&name, addr, now);
            assert!(throttle.names.len() <= MAX_THROTTLE_ENTRIES);
            assert!(throttle.addrs.len() <= MAX_THROTTLE_ENTRIES);
        }
        // A name at its limit outlives one-off guesses.
        assert!(throttle.check("alice", ip(200), t0 + secs(2)).is_err());
        assert!(throttle.check("alice", ip(1), t0 + secs(2)).is_err());
    }

    #[test]
    fn closed_windows_are_forgotten_first_when_full() {
        let mut throttle = Throttle::new(5, 20, WINDOW);
        let t0 = Instant::now();
        for i in 0..MAX_THROTTLE_ENTRIES as u32 {
            throttle.record_failure(&format!("old{i}"), ip(1), t0);
        }
        assert_eq!(throttle.names.len(), MAX_THROTTLE_ENTRIES);
        throttle.record_failure("new", ip(1), t0 + WINDOW);
        assert_eq!(throttle.names.len(), 1, "only the open window is left");
    }

    #[test]
    fn same_instant_failures_still_respect_the_cap() {
        // Ties in (count, time) must not defeat the clean-up.
        let mut throttle = Throttle::new(5, 20, WINDOW);
        let t0 = Instant::now();
        for i in 0..(3 * MAX_THROTTLE_ENTRIES) as u32 {
            throttle.record_failure(&format!("n{i}"), ip(1), t0);
            assert!(throttle.names.len() <= MAX_THROTTLE_ENTRIES);
        }
    }
}
