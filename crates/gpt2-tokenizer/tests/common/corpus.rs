//! A deterministic multilingual corpus (> 5 MB) for the exactness test: synthesized from a seeded
//! generator and the word lists below, so CI needs no corpus file and no Python. The golden ids
//! come from transformers on the same documents (scripts/tokenizer_goldens.py, which gets them
//! through `cargo run --example dump_corpus`). Changing anything here changes the corpus: bump
//! `CORPUS_VERSION` and regenerate the goldens.

#![allow(dead_code)]

pub const CORPUS_VERSION: u32 = 1;
const SEED: u64 = 0x6770_7432_746f_6b21;
const TARGET_BYTES: usize = 5_400_000;

/// splitmix64: tiny, seedable, the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
}

const ENGLISH: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "I",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "not",
    "word",
    "but",
    "what",
    "some",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "there",
    "when",
    "up",
    "use",
    "your",
    "how",
    "said",
    "an",
    "each",
    "she",
    "which",
    "do",
    "their",
    "time",
    "if",
    "will",
    "way",
    "about",
    "many",
    "then",
    "them",
    "write",
    "would",
    "like",
    "so",
    "these",
    "her",
    "long",
    "make",
    "thing",
    "see",
    "him",
    "two",
    "has",
    "look",
    "more",
    "day",
    "could",
    "go",
    "come",
    "did",
    "number",
    "sound",
    "no",
    "most",
    "people",
    "my",
    "over",
    "know",
    "water",
    "than",
    "call",
    "first",
    "who",
    "may",
    "down",
    "side",
    "been",
    "now",
    "find",
    "any",
    "new",
    "work",
    "part",
    "take",
    "get",
    "place",
    "made",
    "live",
    "where",
    "after",
    "back",
    "little",
    "only",
    "round",
    "man",
    "year",
    "came",
    "show",
    "every",
    "good",
    "me",
    "give",
    "our",
    "under",
    "name",
    "very",
    "through",
    "just",
    "form",
    "sentence",
    "great",
    "think",
    "say",
    "help",
    "low",
    "line",
    "differ",
    "turn",
    "cause",
    "much",
    "mean",
    "before",
    "move",
    "right",
    "boy",
    "old",
    "too",
    "same",
    "tell",
    "does",
    "set",
    "three",
    "want",
    "air",
    "well",
    "also",
    "play",
    "small",
    "end",
    "put",
    "home",
    "read",
    "hand",
    "port",
    "large",
    "spell",
    "add",
    "even",
    "land",
    "here",
    "must",
    "big",
    "high",
    "such",
    "follow",
    "act",
    "why",
    "ask",
    "men",
    "change",
    "went",
    "light",
    "kind",
    "off",
    "need",
    "house",
    "picture",
    "try",
    "us",
    "again",
    "animal",
    "point",
    "mother",
    "world",
    "near",
    "build",
    "self",
    "earth",
    "father",
    "head",
    "stand",
    "own",
    "page",
    "should",
    "country",
    "found",
    "answer",
    "school",
    "grow",
    "study",
    "still",
    "learn",
    "plant",
    "cover",
    "food",
    "sun",
    "four",
    "between",
    "state",
    "keep",
    "eye",
    "never",
    "last",
    "let",
    "thought",
    "city",
    "tree",
    "cross",
    "farm",
    "hard",
    "start",
    "might",
    "story",
    "saw",
    "far",
    "sea",
    "draw",
    "left",
    "late",
    "run",
    "while",
    "press",
    "close",
    "night",
    "real",
    "life",
    "few",
    "north",
    "transformer",
    "tokenizer",
    "language",
    "model",
    "neural",
    "network",
    "gradient",
    "descent",
    "probability",
    "distribution",
    "inference",
    "attention",
    "embedding",
    "Washington",
    "London",
    "Tuesday",
    "January",
    "Microsoft",
    "OpenAI",
    "Hugging",
    "Face",
    "GPT",
    "Rust",
    "Python",
    "antidisestablishmentarianism",
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopic",
    "don't",
    "it's",
    "we'll",
    "they're",
    "I'm",
    "you've",
    "he'd",
    "can't",
    "won't",
    "isn't",
    "DON'T",
    "IT'S",
    "WE'LL",
    "THEY'RE",
    "I'M",
    "YOU'VE",
    "HE'D",
    "John's",
    "JOHN'S",
    "Mary’s",
    "it’s",
    "don’t",
    "we’re",
    "o'clock",
    "rock'n'roll",
    "'tis",
    "'twas",
    "ma'am",
    "y'all",
];

const GERMAN: &[&str] = &[
    "Straße",
    "Größe",
    "Übung",
    "Ärger",
    "Öffnung",
    "schön",
    "müssen",
    "Mädchen",
    "Fußball",
    "weiß",
    "Donaudampfschifffahrtsgesellschaftskapitän",
    "Rindfleischetikettierungsüberwachungsaufgabenübertragungsgesetz",
    "und",
    "der",
    "die",
    "das",
    "nicht",
    "über",
    "für",
    "Käse",
    "Brötchen",
    "Frühstück",
    "ungefähr",
    "Äpfel",
    "Gemütlichkeit",
    "Schadenfreude",
    "Zeitgeist",
    "Weltanschauung",
    "Bahnhof",
    "heißt",
    "ß",
    "ẞ",
    "Eichhörnchen",
];

const CYRILLIC_GREEK_ETC: &[&str] = &[
    "привет",
    "мир",
    "Москва",
    "здравствуйте",
    "объектно-ориентированный",
    "ёлка",
    "Україна",
    "їжак",
    "αβγ",
    "Ελληνικά",
    "λόγος",
    "ψυχή",
    "Ωμέγα",
    "ἀρχῇ",
    "שלום",
    "עולם",
    "مرحبا",
    "العالم",
    "كتاب",
    "ﷺ",
    "سلام",
    "हिन्दी",
    "नमस्ते",
    "संस्कृतम्",
    "ภาษาไทย",
    "สวัสดี",
    "ქართული",
    "Հայերեն",
    "ᚠᚢᚦᚨᚱᚲ",
    "ⴰⵣⵓⵍ",
    "ᏣᎳᎩ",
    "ꦗꦮ",
    "𐌰𐌱𐌲",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "𝐛𝐨𝐥𝐝",
    "ﬁ",
    "ﬀ",
    "Ǆ",
    "ǅ",
    "ǆ",
    "İstanbul",
    "ıi",
    "Łódź",
    "Ångström",
    "façade",
    "naïve",
    "coöperate",
    "jalapeño",
    "résumé",
    "Việt Nam",
    "tiếng Việt",
];

const CJK: &[&str] = &[
    "的",
    "一",
    "是",
    "不",
    "了",
    "人",
    "我",
    "在",
    "有",
    "他",
    "这",
    "中",
    "大",
    "来",
    "上",
    "国",
    "个",
    "到",
    "说",
    "们",
    "为",
    "子",
    "和",
    "你",
    "地",
    "出",
    "道",
    "也",
    "时",
    "年",
    "分词",
    "语言模型",
    "人工智能",
    "机器学习",
    "北京",
    "上海",
    "東京",
    "日本語",
    "ひらがな",
    "カタカナ",
    "こんにちは",
    "ありがとう",
    "한국어",
    "안녕하세요",
    "감사합니다",
    "，",
    "。",
    "、",
    "「",
    "」",
    "！",
    "？",
    "：",
    "（",
    "）",
    "…",
    "《",
    "》",
    "〜",
    "ー",
    "・",
    "𠀀",
    "𪚥",
    "𩸽",
    "丶",
    "々",
];

const EMOJI: &[&str] = &[
    "😀",
    "😂",
    "🤗",
    "🚀",
    "🎉",
    "❤️",
    "❤",
    "👍",
    "👍🏽",
    "👍🏿",
    "👨‍👩‍👧‍👦",
    "👩‍💻",
    "🏳️‍🌈",
    "🧑🏾‍🚀",
    "🇩🇪",
    "🇯🇵",
    "🇺🇸",
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "☺️",
    "✌🏻",
    "🤷‍♀️",
    "💯",
    "🔥",
    "✨",
    "🥲",
    "🫠",
    "🪿",
    "©",
    "™",
    "↔️",
    "1️⃣",
    "#️⃣",
    "🀄",
    "🃏",
    "☕",
    "⌚",
    "⏰",
    "𝄞",
    "♀",
    "♂",
    "⚕️",
];

const COMBINING: &[&str] = &[
    "e\u{301}",
    "a\u{308}",
    "o\u{302}\u{323}",
    "n\u{303}",
    "Z\u{335}\u{30c}\u{327}",
    "q\u{307}\u{323}",
    "\u{301}",
    "\u{20dd}",
    "a\u{300}\u{301}\u{302}\u{303}\u{304}",
    "ก\u{e34}\u{e48}",
    "क\u{94d}\u{937}",
    "\u{300}x",
    "ᄀ\u{1161}\u{11a8}",
    "i\u{307}",
    "\u{200d}",
    "\u{200c}",
    "\u{fe0f}",
    "\u{34f}",
];

const NUMBERS: &[&str] = &[
    "0",
    "7",
    "42",
    "1984",
    "3.14159",
    "1,234,567",
    "1.000.000,00",
    "2024-01-15",
    "12:30:45",
    "0x1F",
    "1e-9",
    "−5",
    "+49 30 1234567",
    "٠١٢٣٤٥٦٧٨٩",
    "۱۲۳",
    "०१२३४५६७८९",
    "০১২",
    "０１２３４５",
    "²",
    "³",
    "¹⁰",
    "⁴²",
    "₀₁₂",
    "½",
    "¾",
    "⅞",
    "Ⅻ",
    "Ⅳ",
    "ⅷ",
    "ↂ",
    "①",
    "⑳",
    "㉑",
    "〇",
    "一二三",
    "𝟘𝟙𝟚",
    "🄁",
    "௧௨௩",
    "๑๒๓",
    "፩፪",
    "𐄇",
    "10⁻³",
    "2³²",
    "99%",
    "$12.50",
    "€3,99",
    "£7",
    "¥500",
    "₹1,00,000",
];

const PUNCT: &[&str] = &[
    ".", ",", "!", "?", ";", ":", "...", "!!", "?!", "—", "–", "-", "(", ")", "[", "]", "{", "}",
    "\"", "'", "“", "”", "‘", "’", "«", "»", "„", "‚", "/", "\\", "@", "#", "&", "*", "%", "^",
    "~", "`", "|", "<", ">", "=", "==", "!=", "=>", "->", "::", "§", "¶", "†", "•", "·", "°", "±",
    "×", "÷", "¿", "¡",
];

const SPACES: &[&str] = &[
    " ",
    "  ",
    "   ",
    "    ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\n\n\n",
    "\r\n",
    "\r\n\r\n",
    " \n",
    "  \n",
    "\t\n",
    " \t ",
    "\u{a0}",
    " \u{a0}",
    "\u{a0}\u{a0}",
    "\u{3000}",
    "\u{2028}",
    "\u{2029}",
    "\u{85}",
    "\u{b}",
    "\u{c}",
    "\u{2002}",
    "\u{2003}",
    "\u{2009}",
    "\u{200a}",
    "\u{202f}",
    "\u{205f}",
    "\u{1680}",
    "\u{200b}",
    "\u{feff}",
    "\u{1c}",
    "\u{1f}",
    "\r",
    " \r\n",
    "\n \n",
    "\n\t\t",
    "        ",
];

const CODE: &[&str] = &[
    "fn main() {\n    println!(\"Hello, world!\");\n}\n",
    "def encode(self, text: str) -> list[int]:\n    \"\"\"Encode a string.\"\"\"\n    return [self.ranks[b] for b in text.encode('utf-8')]\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "if x != None and y >= 0:\n        print(f\"{x!r}: {y:.3f}\")\n",
    "const std = @import(\"std\");\n",
    "#include <stdio.h>\nint main(void) { return 0; }\n",
    "SELECT id, name FROM users WHERE age > 21 ORDER BY name DESC;\n",
    "<div class=\"container\"><p>Hello &amp; welcome</p></div>\n",
    "let v: Vec<u32> = xs.iter().map(|x| x * 2).filter(|&x| x > 10).collect();\n",
    "    // TODO(alice): handle the edge case where len == 0\n",
    "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)\n",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}\n",
    "$ cargo test --release -- --nocapture\n",
    "    return self._cache.get(key, default)  # noqa: E501\n",
    "x+=1;y-=2;z*=3;w/=4;a%=5;b<<=6;c>>=7;d&=8;e|=9;f^=10;\n",
    "/* multi\n * line\n * comment */\n",
    "match token {\n    Some(t) if t.len() > 3 => t,\n    _ => \"\",\n}\n",
    "\t\t\tif (a && b || !c) { goto fail; }\n",
    "print('it''s')  # SQL-style 's escape\n",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'x '' '''\n",
    "https://example.com/path?query=1&other=two#frag\n",
    "user@example.org, +1 (555) 123-4567\n",
];

const SPECIAL: &[&str] = &[
    "<|endoftext|>",
    "<|endoftext|><|endoftext|>",
    "<|endoftext|",
    "|endoftext|>",
    "<|ENDOFTEXT|>",
    " <|endoftext|> ",
    "\n<|endoftext|>\n",
    "<|endoftext|>'s",
    "<|endoftext|>123",
    "<<|endoftext|>>",
];

fn push_from(rng: &mut Rng, out: &mut String, list: &[&str]) {
    out.push_str(list[rng.below(list.len())]);
}

fn random_scalar(rng: &mut Rng) -> char {
    loop {
        // Mostly the BMP, sometimes any plane (unassigned and private-use included).
        let cp = match rng.below(10) {
            0..=5 => rng.below(0x3000) as u32,
            6..=8 => rng.below(0x10000) as u32,
            _ => rng.below(0x110000) as u32,
        };
        if let Some(c) = char::from_u32(cp) {
            return c;
        }
    }
}

/// Words of one list joined by spaces and punctuation, with occasional odd spacing.
fn prose(rng: &mut Rng, out: &mut String, words: &[&str], len: usize) {
    let start = out.len();
    let mut capital = true;
    while out.len() - start < len {
        let w = words[rng.below(words.len())];
        if capital && rng.chance(80) {
            let mut cs = w.chars();
            if let Some(f) = cs.next() {
                out.extend(f.to_uppercase());
                out.push_str(cs.as_str());
            }
        } else if rng.chance(3) {
            out.push_str(&w.to_uppercase());
        } else {
            out.push_str(w);
        }
        capital = false;
        match rng.below(100) {
            0..=69 => out.push(' '),
            70..=79 => {
                push_from(
                    rng,
                    out,
                    &[
                        ". ", ", ", "; ", ": ", "! ", "? ", ".\n", ".\n\n", " — ", "... ",
                    ],
                );
                capital = true;
            }
            80..=84 => push_from(rng, out, SPACES),
            85..=89 => {
                out.push(' ');
                push_from(rng, out, NUMBERS);
                out.push(' ');
            }
            90..=92 => {
                out.push_str(" \"");
                push_from(rng, out, words);
                out.push_str("\" ");
            }
            93..=94 => push_from(rng, out, PUNCT),
            95 => push_from(rng, out, EMOJI),
            96 => push_from(rng, out, SPECIAL),
            _ => {}
        }
    }
}

fn document(rng: &mut Rng, kind: usize) -> String {
    let len = 500 + rng.below(9000);
    let mut s = String::with_capacity(len + 64);
    match kind {
        0 | 1 => prose(rng, &mut s, ENGLISH, len),
        2 => {
            while s.len() < len {
                push_from(rng, &mut s, CODE);
                if rng.chance(30) {
                    push_from(rng, &mut s, SPACES);
                }
                if rng.chance(20) {
                    s.push_str("    # ");
                    prose(rng, &mut s, ENGLISH, 60);
                    s.push('\n');
                }
            }
        }
        3 => prose(rng, &mut s, GERMAN, len),
        4 => {
            while s.len() < len {
                push_from(rng, &mut s, CJK);
                if rng.chance(8) {
                    push_from(
                        rng,
                        &mut s,
                        &[" ", "\n", "GPT-2", "2024年", "Rust", "，", "。"],
                    );
                }
            }
        }
        5 => {
            while s.len() < len {
                push_from(rng, &mut s, EMOJI);
                if rng.chance(40) {
                    push_from(rng, &mut s, &[" ", "", "  ", "\n", "!", "ok"]);
                }
                if rng.chance(10) {
                    push_from(rng, &mut s, ENGLISH);
                }
            }
        }
        6 => {
            while s.len() < len {
                push_from(rng, &mut s, CYRILLIC_GREEK_ETC);
                push_from(rng, &mut s, COMBINING);
                if rng.chance(50) {
                    s.push(' ');
                }
            }
        }
        7 => {
            while s.len() < len {
                let list = if rng.chance(50) { SPACES } else { ENGLISH };
                push_from(rng, &mut s, list);
                if rng.chance(10) {
                    push_from(rng, &mut s, PUNCT);
                }
            }
        }
        8 => {
            while s.len() < len {
                push_from(rng, &mut s, NUMBERS);
                push_from(rng, &mut s, &[" ", "", ",", ".", "\n", "x", "a", " - "]);
            }
        }
        9 => {
            while s.len() < len {
                s.push(random_scalar(rng));
                if rng.chance(10) {
                    s.push(' ');
                }
            }
        }
        _ => {
            // Everything mixed, contractions and special tokens included.
            let lists: [&[&str]; 10] = [
                ENGLISH,
                GERMAN,
                CYRILLIC_GREEK_ETC,
                CJK,
                EMOJI,
                COMBINING,
                NUMBERS,
                PUNCT,
                SPACES,
                SPECIAL,
            ];
            while s.len() < len {
                let list = lists[rng.below(lists.len())];
                push_from(rng, &mut s, list);
                if rng.chance(30) {
                    s.push(' ');
                }
                if rng.chance(3) {
                    s.push(random_scalar(rng));
                }
            }
        }
    }
    s
}

/// The corpus: documents cycling through the kinds above (English prose twice as often).
pub fn corpus() -> Vec<String> {
    let mut rng = Rng::new(SEED);
    let mut docs = Vec::new();
    let mut total = 0;
    while total < TARGET_BYTES {
        let kind = docs.len() % 11;
        let d = document(&mut rng, kind);
        total += d.len();
        docs.push(d);
    }
    docs
}

/// English-only documents, for the benchmark's headline figure.
pub fn english(bytes: usize) -> Vec<String> {
    let mut rng = Rng::new(SEED ^ 1);
    let mut docs = Vec::new();
    let mut total = 0;
    while total < bytes {
        let d = document(&mut rng, 0);
        total += d.len();
        docs.push(d);
    }
    docs
}

/// FNV-1a 64 over the little-endian bytes of the ids (the golden file's digest).
pub fn digest_ids(ids: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// FNV-1a 64 over bytes (to tell a changed corpus from a changed tokenizer).
pub fn digest_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
