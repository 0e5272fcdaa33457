//! Who sent a request, judged from its `User-Agent`: a browser, a search
//! engine's crawler, some other bot, or a vulnerability scanner.
//!
//! In: the user agent exactly as logged (`""` when the client sent none; a
//! lone `-` is treated the same). Out: a [`ClientClass`] and, for search
//! engines, the engine's name — [`identify`] gives both from one scan,
//! [`client_class`] and [`search_engine`] one each.
//!
//! One case-insensitive Aho-Corasick automaton holds every marker below and
//! reads the user agent once; the strongest marker found decides, in this
//! order:
//! 1. a scanner's name (`sqlmap`, `Nikto`, `Nmap`, `zgrab`, `Nuclei`,
//!    `WPScan`, `gobuster`, `ffuf`, `Acunetix`, `Invicti` (Netsparker),
//!    `OpenVAS`, internet-wide scanners such as `CensysInspect`, …) →
//!    [`ClientClass::Scanner`];
//! 2. a search engine's crawler (`Googlebot`, `bingbot`, `YandexBot`,
//!    `Baiduspider`, `DuckDuckBot`, `Applebot`, `Yahoo! Slurp`, …) →
//!    [`ClientClass::SearchEngine`];
//! 3. anything bot-like (`bot`, `crawl`, `spider`, a URL, `HeadlessChrome`,
//!    …) → [`ClientClass::Bot`];
//! 4. otherwise a browser if the agent starts with `Mozilla/` or `Opera/`
//!    and names a real rendering engine (`AppleWebKit/`, `Gecko/`,
//!    `Trident/`, `Presto/`), and a [`ClientClass::Bot`] if not: HTTP
//!    libraries, command-line tools, native apps, empty agents.
//!
//! Guarantees: never panics, allocates nothing, and the same agent always
//! gets the same answer. A browser agent costs a few hundred nanoseconds (the
//! automaton reads every byte); traffic repeats its agents, so the hot path
//! should go through [`ClientCache`], which answers a repeated agent with
//! one hash and one comparison.
//!
//! Limits: a user agent is a claim, not an identity. A scanner that sends a
//! browser's agent is a browser here (its payloads are still caught by
//! [`super::threat`]), and a scraper that calls itself Googlebot is a search
//! engine: verifying crawlers needs reverse DNS, which does not belong on
//! this path. Very old browsers without an engine token (Internet
//! Explorer 7 and earlier) count as bots — today nearly all such agents are.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

/// What kind of client sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientClass {
    /// A person's web browser (or an in-app web view).
    Browser,
    /// A search engine's crawler; [`search_engine`] says which.
    SearchEngine,
    /// Any other automated or non-browser client: crawlers, monitors, HTTP
    /// libraries, command-line tools, native apps, an empty user agent.
    Bot,
    /// A vulnerability scanner or attack tool.
    Scanner,
}

impl ClientClass {
    /// Every class, in declaration order.
    pub const ALL: [ClientClass; 4] = [
        ClientClass::Browser,
        ClientClass::SearchEngine,
        ClientClass::Bot,
        ClientClass::Scanner,
    ];

    /// The class's name in rollups and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientClass::Browser => "browser",
            ClientClass::SearchEngine => "search_engine",
            ClientClass::Bot => "bot",
            ClientClass::Scanner => "scanner",
        }
    }
}

/// The class of the client that sent `user_agent`.
///
/// ```
/// use aggregator::classify::client::{client_class, ClientClass};
///
/// let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
///               (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
/// assert_eq!(client_class(chrome), ClientClass::Browser);
/// assert_eq!(client_class("curl/8.5.0"), ClientClass::Bot);
/// assert_eq!(client_class("sqlmap/1.7.2#stable (https://sqlmap.org)"), ClientClass::Scanner);
/// ```
pub fn client_class(user_agent: &str) -> ClientClass {
    identify(user_agent).0
}

/// The search engine whose crawler sent `user_agent` (`"google"`, `"bing"`,
/// `"yandex"`, `"baidu"`, `"duckduckgo"`, `"apple"`, `"yahoo"`, …), or `None`
/// when [`client_class`] is not [`ClientClass::SearchEngine`].
///
/// ```
/// use aggregator::classify::client::search_engine;
///
/// let googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
/// assert_eq!(search_engine(googlebot), Some("google"));
/// assert_eq!(search_engine("curl/8.5.0"), None);
/// ```
pub fn search_engine(user_agent: &str) -> Option<&'static str> {
    identify(user_agent).1
}

/// [`client_class`] and [`search_engine`] from one scan of `user_agent`.
pub fn identify(user_agent: &str) -> (ClientClass, Option<&'static str>) {
    let ua = user_agent.trim();
    if ua.is_empty() || ua == "-" {
        return (ClientClass::Bot, None);
    }
    let mut scanner = false;
    let mut engine_name = None;
    let mut bot = false;
    let mut rendering_engine = false;
    // Leftmost-longest: a longer marker hides the shorter ones inside it, so
    // "cubot" (a phone maker) hides "bot", and "googlebot" names Google.
    for m in MATCHER.find_iter(ua) {
        match MARKERS[m.pattern().as_usize()].1 {
            Marker::Scanner => scanner = true,
            Marker::SearchEngine(name) => engine_name = engine_name.or(Some(name)),
            Marker::Bot => bot = true,
            Marker::RenderingEngine => rendering_engine = true,
            Marker::NotBot => {}
        }
    }
    if scanner {
        (ClientClass::Scanner, None)
    } else if let Some(name) = engine_name {
        (ClientClass::SearchEngine, Some(name))
    } else if !bot && rendering_engine && has_browser_prefix(ua) {
        (ClientClass::Browser, None)
    } else {
        (ClientClass::Bot, None)
    }
}

fn has_browser_prefix(ua: &str) -> bool {
    let starts = |prefix: &str| {
        ua.len() >= prefix.len()
            && ua.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    starts("mozilla/") || starts("opera/")
}

/// What finding a marker in a user agent says.
#[derive(Clone, Copy)]
enum Marker {
    Scanner,
    SearchEngine(&'static str),
    Bot,
    /// A rendering engine's product token: necessary for a browser.
    RenderingEngine,
    /// Looks like a bot marker but is not (it hides the shorter marker).
    NotBot,
}

/// Every marker, lower case (matching ignores ASCII case).
const MARKERS: &[(&str, Marker)] = &[
    // Scanners and attack tools, by the names they put in their agents.
    ("sqlmap", Marker::Scanner),
    ("nikto", Marker::Scanner),
    ("nmap scripting engine", Marker::Scanner),
    ("nmap.org", Marker::Scanner),
    ("masscan", Marker::Scanner),
    ("zgrab", Marker::Scanner),
    ("nuclei", Marker::Scanner),
    ("wpscan", Marker::Scanner),
    ("dirbuster", Marker::Scanner),
    ("gobuster", Marker::Scanner),
    ("feroxbuster", Marker::Scanner),
    ("fuzz faster u fool", Marker::Scanner),
    ("wfuzz", Marker::Scanner),
    ("acunetix", Marker::Scanner),
    ("nessus", Marker::Scanner),
    ("openvas", Marker::Scanner),
    ("w3af", Marker::Scanner),
    ("netsparker", Marker::Scanner),
    // Netsparker's name since 2022.
    ("invicti", Marker::Scanner),
    ("arachni", Marker::Scanner),
    ("skipfish", Marker::Scanner),
    ("mozilla/5.0 sf/", Marker::Scanner), // skipfish's default agent
    ("jorgee", Marker::Scanner),
    ("zmeu", Marker::Scanner),
    ("morfeus", Marker::Scanner),
    ("commix", Marker::Scanner),
    ("xsser", Marker::Scanner),
    ("havij", Marker::Scanner),
    ("sqlninja", Marker::Scanner),
    ("whatweb", Marker::Scanner),
    ("wapiti", Marker::Scanner),
    ("jaeles", Marker::Scanner),
    ("fimap", Marker::Scanner),
    ("appscan", Marker::Scanner),
    ("webinspect", Marker::Scanner),
    ("(hydra)", Marker::Scanner),
    ("paros/", Marker::Scanner),
    ("zaproxy", Marker::Scanner),
    ("dotdotpwn", Marker::Scanner),
    ("joomscan", Marker::Scanner),
    ("droopescan", Marker::Scanner),
    ("cmsmap", Marker::Scanner),
    ("vega/", Marker::Scanner),
    ("dirsearch", Marker::Scanner),
    ("ffuf", Marker::Scanner),
    ("dalfox", Marker::Scanner),
    ("qualys", Marker::Scanner),
    ("detectify", Marker::Scanner),
    ("nettacker", Marker::Scanner),
    ("xsstrike", Marker::Scanner),
    ("ghauri", Marker::Scanner),
    // Proxies and suites that scan through themselves, by their product
    // names as written in agents (`Burp Suite Professional/2023.12`,
    // `… Safari/537.36 BurpSuite`, `OWASP ZAP/2.14`, `OWASP_ZAP`).
    ("burpsuite", Marker::Scanner),
    ("burp suite", Marker::Scanner),
    ("burpcollaborator", Marker::Scanner),
    ("owasp", Marker::Scanner),
    ("webscarab", Marker::Scanner),
    ("appspider", Marker::Scanner),
    ("nexpose", Marker::Scanner),
    ("rapid7", Marker::Scanner),
    ("tenable", Marker::Scanner),
    ("greenbone", Marker::Scanner),
    ("metasploit", Marker::Scanner),
    ("probely", Marker::Scanner),
    // Recon and fuzzing tools, and the rest of the web scanners in
    // common use.
    ("nmap/", Marker::Scanner),
    ("zmap", Marker::Scanner),
    ("censys", Marker::Scanner),
    ("interactsh", Marker::Scanner),
    ("gospider", Marker::Scanner),
    ("hakrawler", Marker::Scanner),
    ("gowitness", Marker::Scanner),
    ("aquatone", Marker::Scanner),
    ("eyewitness", Marker::Scanner),
    ("cmseek", Marker::Scanner),
    ("uniscan", Marker::Scanner),
    ("golismero", Marker::Scanner),
    ("vooki", Marker::Scanner),
    ("wascan", Marker::Scanner),
    ("bsqlbf", Marker::Scanner),
    ("sqlsus", Marker::Scanner),
    ("webshag", Marker::Scanner),
    ("fuzzer", Marker::Scanner),
    ("pentest", Marker::Scanner),
    ("exploit", Marker::Scanner),
    // What a tool that does not give its name says it is: `Vulnerability
    // Scanner`, `security scanner`, `vuln-scan`.
    ("vuln", Marker::Scanner),
    ("security scanner", Marker::Scanner),
    ("web scanner", Marker::Scanner),
    // ProjectDiscovery's recon and scanning kit (nuclei, httpx, katana,
    // …) names its home in every agent.
    ("projectdiscovery", Marker::Scanner),
    // Internet-wide scanners: they walk every address probing for
    // services and exposed files, so the security view counts them.
    ("censysinspect", Marker::Scanner),
    // LeakIX's crawlers (l9explore, l9tcpid, l9scan) all link home.
    ("leakix.net", Marker::Scanner),
    ("l9explore", Marker::Scanner),
    ("l9tcpid", Marker::Scanner),
    ("l9scan", Marker::Scanner),
    ("internet-measurement", Marker::Scanner),
    ("internetmeasurement", Marker::Scanner),
    ("expanse, a palo alto networks company", Marker::Scanner),
    ("netsystemsresearch", Marker::Scanner),
    // Search engines' crawlers.
    ("googlebot", Marker::SearchEngine("google")),
    ("google-inspectiontool", Marker::SearchEngine("google")),
    ("googleother", Marker::SearchEngine("google")),
    ("adsbot-google", Marker::SearchEngine("google")),
    ("mediapartners-google", Marker::SearchEngine("google")),
    ("storebot-google", Marker::SearchEngine("google")),
    ("feedfetcher-google", Marker::SearchEngine("google")),
    ("apis-google", Marker::SearchEngine("google")),
    ("bingbot", Marker::SearchEngine("bing")),
    ("bingpreview", Marker::SearchEngine("bing")),
    ("adidxbot", Marker::SearchEngine("bing")),
    ("msnbot", Marker::SearchEngine("bing")),
    ("yandexbot", Marker::SearchEngine("yandex")),
    ("yandex.com/bots", Marker::SearchEngine("yandex")),
    ("baiduspider", Marker::SearchEngine("baidu")),
    ("duckduckbot", Marker::SearchEngine("duckduckgo")),
    (
        "duckduckgo-favicons-bot",
        Marker::SearchEngine("duckduckgo"),
    ),
    ("applebot", Marker::SearchEngine("apple")),
    ("yahoo! slurp", Marker::SearchEngine("yahoo")),
    ("sogou web spider", Marker::SearchEngine("sogou")),
    ("seznambot", Marker::SearchEngine("seznam")),
    ("naver.me/spd", Marker::SearchEngine("naver")),
    ("yeti/", Marker::SearchEngine("naver")),
    ("petalbot", Marker::SearchEngine("petal")),
    ("qwantify", Marker::SearchEngine("qwant")),
    ("qwantbot", Marker::SearchEngine("qwant")),
    ("coccocbot", Marker::SearchEngine("coccoc")),
    ("mojeekbot", Marker::SearchEngine("mojeek")),
    ("360spider", Marker::SearchEngine("360")),
    // Bot-like words. Agents that do not look like a browser are bots
    // anyway, so only what hides inside browser-looking agents is needed.
    ("bot", Marker::Bot),
    ("crawl", Marker::Bot),
    ("spider", Marker::Bot),
    ("slurp", Marker::Bot),
    ("http:", Marker::Bot),
    ("https:", Marker::Bot),
    ("headless", Marker::Bot),
    ("phantomjs", Marker::Bot),
    ("puppeteer", Marker::Bot),
    ("playwright", Marker::Bot),
    ("selenium", Marker::Bot),
    ("lighthouse", Marker::Bot),
    ("preview", Marker::Bot),
    ("externalhit", Marker::Bot),
    ("powershell", Marker::Bot),
    ("python", Marker::Bot),
    ("curl/", Marker::Bot),
    ("wget", Marker::Bot),
    // Phone makers whose model names end in "bot".
    ("cubot", Marker::NotBot),
    // Rendering engines.
    ("applewebkit/", Marker::RenderingEngine),
    ("gecko/", Marker::RenderingEngine),
    ("like gecko", Marker::RenderingEngine),
    ("trident/", Marker::RenderingEngine),
    ("presto/", Marker::RenderingEngine),
];

static MATCHER: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        // A DFA is the fastest to search; for ~100 short patterns it is a
        // few hundred kilobytes, built once.
        .kind(Some(AhoCorasickKind::DFA))
        .build(MARKERS.iter().map(|(pattern, _)| pattern))
        .expect("the user-agent markers are a valid, small pattern set")
});

/// Remembers the class of recently seen user agents, so that the agents a
/// stream repeats — nearly all of them — cost a hash and a comparison
/// instead of a scan. One per thread; it never grows beyond its slots.
///
/// ```
/// use aggregator::classify::client::{ClientCache, ClientClass};
///
/// let mut cache = ClientCache::new(4096);
/// assert_eq!(cache.identify("Googlebot-Image/1.0"), (ClientClass::SearchEngine, Some("google")));
/// assert_eq!(cache.identify("Googlebot-Image/1.0"), (ClientClass::SearchEngine, Some("google")));
/// ```
pub struct ClientCache {
    /// Direct-mapped: an agent lives in the slot its hash picks, evicting
    /// whichever agent was there.
    slots: Box<[Option<Slot>]>,
    mask: usize,
}

struct Slot {
    user_agent: Box<str>,
    answer: (ClientClass, Option<&'static str>),
}

/// Agents longer than this are classified without being remembered: they
/// are rare, and storing them would let one client fill memory.
const MAX_CACHED_LEN: usize = 1024;

impl ClientCache {
    /// A cache of `slots` entries, rounded up to a power of two (at least 1).
    pub fn new(slots: usize) -> ClientCache {
        let slots = slots.clamp(1, 1 << 20).next_power_of_two();
        ClientCache {
            slots: (0..slots).map(|_| None).collect(),
            mask: slots - 1,
        }
    }

    /// The same answer as [`identify`].
    pub fn identify(&mut self, user_agent: &str) -> (ClientClass, Option<&'static str>) {
        if user_agent.len() > MAX_CACHED_LEN {
            return identify(user_agent);
        }
        let index = xxhash_rust::xxh3::xxh3_64(user_agent.as_bytes()) as usize & self.mask;
        let slot = &mut self.slots[index];
        match slot {
            Some(s) if &*s.user_agent == user_agent => s.answer,
            _ => {
                let answer = identify(user_agent);
                *slot = Some(Slot {
                    user_agent: user_agent.into(),
                    answer,
                });
                answer
            }
        }
    }

    /// The same answer as [`client_class`].
    pub fn client_class(&mut self, user_agent: &str) -> ClientClass {
        self.identify(user_agent).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

    #[test]
    fn names_are_stable() {
        let names: Vec<_> = ClientClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["browser", "search_engine", "bot", "scanner"]);
    }

    #[test]
    fn browsers() {
        for ua in [
            CHROME,
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
            "Opera/9.80 (Windows NT 6.1; WOW64) Presto/2.12.388 Version/12.18",
            // A phone maker whose name ends in "bot".
            "Mozilla/5.0 (Linux; Android 9; CUBOT P30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.6045.163 Mobile Safari/537.36",
            // DuckDuckGo's browser is a browser, not its crawler.
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 DuckDuckGo/7 Safari/605.1.15",
        ] {
            assert_eq!(identify(ua), (ClientClass::Browser, None), "{ua}");
        }
    }

    #[test]
    fn search_engines() {
        for (name, ua) in [
            ("google", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            ("google", "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.201 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            ("google", "Mediapartners-Google"),
            ("bing", "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"),
            ("yandex", "Mozilla/5.0 (compatible; YandexImages/3.0; +http://yandex.com/bots)"),
            ("baidu", "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)"),
            ("duckduckgo", "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)"),
            ("apple", "Mozilla/5.0 (compatible; Applebot/0.1; +http://www.apple.com/go/applebot)"),
            ("yahoo", "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)"),
        ] {
            assert_eq!(identify(ua), (ClientClass::SearchEngine, Some(name)), "{ua}");
            assert_eq!(search_engine(ua), Some(name));
        }
    }

    #[test]
    fn bots() {
        for ua in [
            "",
            "-",
            "   ",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "Go-http-client/1.1",
            "Mozilla/5.0",
            "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)",
            "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.6367.60 Safari/537.36",
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "okhttp/4.12.0",
            "python-httpx/0.27.0",
            "Wget/1.21.4",
            "UptimeRobot/2.0 (http://www.uptimerobot.com/)",
            "Datadog Agent/7.50.0",
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "QR Scanner/3.1 CFNetwork/1408.0.4 Darwin/22.5.0",
        ] {
            assert_eq!(identify(ua), (ClientClass::Bot, None), "{ua:?}");
        }
    }

    #[test]
    fn scanners_win_over_everything() {
        for ua in [
            "sqlmap/1.7.2#stable (https://sqlmap.org)",
            "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000003)",
            "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
            "Mozilla/5.0 zgrab/0.x",
            "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
            // A scanner pretending to be a crawler is still a scanner.
            "Mozilla/5.0 (compatible; Googlebot/2.1) sqlmap/1.7",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.0 Safari/537.36 Netsparker",
            "Burp Suite Community Edition/2024.1",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0 Safari/537.36 burpsuite",
            "Mozilla/5.0 (compatible; OWASP-ZAP/2.15)",
            "Mozilla/5.0 (compatible; Nexpose/6.6)",
            "Mozilla/5.0 (compatible; Tenable.io WAS)",
            "gospider/1.1.6",
            "Mozilla/5.0 (compatible; Vulnerability Scanner/1.0)",
            "Mozilla/5.0 (compatible; Metasploit RSPEC)",
        ] {
            assert_eq!(identify(ua), (ClientClass::Scanner, None), "{ua}");
        }
    }

    #[test]
    fn case_does_not_matter() {
        assert_eq!(client_class("SQLMAP/1.0"), ClientClass::Scanner);
        assert_eq!(search_engine("GOOGLEBOT/2.1"), Some("google"));
        assert_eq!(client_class(&CHROME.to_uppercase()), ClientClass::Browser);
    }

    #[test]
    fn cache_evicts_and_stays_correct() {
        let mut cache = ClientCache::new(2);
        let agents = [
            CHROME,
            "curl/8.5.0",
            "Googlebot-Image/1.0",
            "sqlmap/1.0",
            CHROME,
            "curl/8.5.0",
        ];
        for _ in 0..3 {
            for ua in agents {
                assert_eq!(cache.identify(ua), identify(ua), "{ua}");
            }
        }
        let long = format!("{CHROME} {}", "x".repeat(MAX_CACHED_LEN));
        assert_eq!(cache.client_class(&long), client_class(&long));
    }

    proptest! {
        #[test]
        fn never_panics_and_cache_agrees(ua in ".{0,300}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let lossy = String::from_utf8_lossy(&bytes);
            let mut cache = ClientCache::new(8);
            for ua in [ua.as_str(), &lossy] {
                let answer = identify(ua);
                prop_assert_eq!(answer.1.is_some(), answer.0 == ClientClass::SearchEngine);
                prop_assert_eq!(cache.identify(ua), answer);
                prop_assert_eq!(cache.identify(ua), answer);
            }
        }
    }
}
