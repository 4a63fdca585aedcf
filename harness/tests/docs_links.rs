//! The README and the book (`docs/src`) have no broken relative link.
//!
//! `mdbook build docs` (a CI step) fails on a chapter that SUMMARY.md lists
//! but that is missing, not on a link to a missing file or heading. So this
//! test reads every Markdown file as mdBook does (pulldown-cmark, mdBook's
//! options) and checks that:
//!
//! - every relative link resolves to a file that exists, and a `#anchor` to
//!   a heading of the target (ids made as mdBook and GitHub make them);
//! - a chapter's links stay inside `docs/src`, the only files the rendered
//!   book holds (write a repository path as code, not as a link);
//! - every chapter in `docs/src` is listed in SUMMARY.md.
//!
//! The unit tests at the end show that each check fails on a broken example.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// The options mdBook 0.5 parses chapters with (`mdbook-markdown`).
fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_HEADING_ATTRIBUTES
}

/// What a link check needs of one Markdown file.
#[derive(Debug, Default)]
struct Page {
    /// The ids of its headings, in order.
    anchors: Vec<String>,
    /// The destinations of its links and images.
    links: Vec<String>,
}

impl Page {
    fn parse(markdown: &str) -> Page {
        let mut page = Page::default();
        let mut used = HashSet::new();
        // The text of the heading being read, and its explicit `{#id}`.
        let mut heading: Option<(String, Option<String>)> = None;
        for event in Parser::new_ext(markdown, options()) {
            match event {
                Event::Start(Tag::Heading { id, .. }) => {
                    heading = Some((String::new(), id.map(|id| id.to_string())));
                }
                Event::Text(text) | Event::Code(text) => {
                    if let Some((content, _)) = heading.as_mut() {
                        content.push_str(&text);
                    }
                }
                Event::End(TagEnd::Heading(_)) => {
                    if let Some((content, explicit)) = heading.take() {
                        let id = explicit.unwrap_or_else(|| heading_id(&content));
                        page.anchors.push(unique(id, &mut used));
                    }
                }
                Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                    page.links.push(dest_url.to_string());
                }
                _ => {}
            }
        }
        page
    }
}

/// A heading's id from its text, as mdBook's `id_from_content` makes it
/// (and, for the ASCII headings we write, as GitHub does): lower case,
/// letters, digits, `_` and `-` kept, blanks to `-`, the rest dropped.
fn heading_id(content: &str) -> String {
    content
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '_' || c == '-' => Some(c),
            c if c.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

/// The second heading with one id gets `-1`, the third `-2`, ...
fn unique(id: String, used: &mut HashSet<String>) -> String {
    if used.insert(id.clone()) {
        return id;
    }
    (1..)
        .map(|n| format!("{id}-{n}"))
        .find(|candidate| used.insert(candidate.clone()))
        .expect("an unused suffix")
}

/// A link with a scheme (`https:`, `mailto:`) leaves the repository.
fn is_external(dest: &str) -> bool {
    match dest.split_once(':') {
        Some((scheme, _)) => !scheme.is_empty() && !scheme.contains(['/', '#', '.', '?']),
        None => false,
    }
}

/// `a/b/../c` as `a/c`, without asking the file system (the target may not
/// exist).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every `.md` file under `dir`, sorted.
fn markdown_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Every broken link under `root` (its `README.md` and `docs/src`), one
/// line each, naming the file and the link.
fn problems(root: &Path) -> Vec<String> {
    let book = root.join("docs/src");
    let mut files = markdown_under(&book);
    if root.join("README.md").is_file() {
        files.insert(0, root.join("README.md"));
    }
    let shown = |path: &Path| {
        path.strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    let read = |path: &Path| fs::read_to_string(path).map(|text| Page::parse(&text));

    let mut problems = Vec::new();
    for file in &files {
        let page = match read(file) {
            Ok(page) => page,
            Err(e) => {
                problems.push(format!("{}: cannot read: {e}", shown(file)));
                continue;
            }
        };
        let in_book = file.starts_with(&book);
        for dest in &page.links {
            if dest.is_empty() || is_external(dest) {
                continue;
            }
            let (path, anchor) = match dest.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (dest.as_str(), None),
            };
            let target = if path.is_empty() {
                file.clone()
            } else {
                lexical(&file.parent().unwrap_or(root).join(path))
            };
            let at = format!("{}: link `{dest}`", shown(file));
            if in_book && !target.starts_with(&book) {
                problems.push(format!(
                    "{at} leaves docs/src, which is all the rendered book holds \
                     (write a repository path as code)"
                ));
                continue;
            }
            if !target.exists() {
                problems.push(format!("{at}: no such file {}", shown(&target)));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if target.extension().is_none_or(|e| e != "md") {
                problems.push(format!("{at}: an anchor into a file that is not Markdown"));
                continue;
            }
            let anchors = if target == *file {
                page.anchors.clone()
            } else {
                read(&target).map(|p| p.anchors).unwrap_or_default()
            };
            if !anchors.iter().any(|a| a == anchor) {
                problems.push(format!(
                    "{at}: no heading `#{anchor}` in {} (it has: {})",
                    shown(&target),
                    anchors.join(", ")
                ));
            }
        }
    }

    // Every chapter is in the book's table of contents.
    let summary = book.join("SUMMARY.md");
    if book.is_dir() {
        match read(&summary) {
            Ok(page) => {
                let listed: BTreeSet<PathBuf> = page
                    .links
                    .iter()
                    .filter(|dest| !is_external(dest))
                    .map(|dest| lexical(&book.join(dest.split('#').next().unwrap_or(dest))))
                    .collect();
                for file in files.iter().filter(|f| f.starts_with(&book)) {
                    if *file != summary && !listed.contains(file) {
                        problems.push(format!(
                            "{}: a chapter that SUMMARY.md does not list",
                            shown(file)
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("{}: cannot read: {e}", shown(&summary))),
        }
    }
    problems
}

#[test]
fn the_readme_and_the_book_have_no_broken_link() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    assert!(
        root.join("docs/src/SUMMARY.md").is_file(),
        "the book is missing"
    );
    let problems = problems(root);
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_readme_links_into_the_book() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = Page::parse(&fs::read_to_string(root.join("README.md")).unwrap());
    assert!(
        readme.links.iter().any(|l| l.starts_with("docs/src/")),
        "the README is the front door: it must point into the book"
    );
}

/// A small repository: a README and a book of two chapters.
fn example(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

const SUMMARY: &str = "# Summary\n\n- [One](one.md)\n- [Two](two.md)\n";
const TWO: &str = "# Two\n\n## The `record` command\n\n## Steps\n\n## Steps\n";

#[test]
fn good_links_pass() {
    let repo = example(&[
        (
            "README.md",
            "[two](docs/src/two.md#the-record-command) [web](https://example.org/x) [mail](mailto:a@b)",
        ),
        ("docs/src/SUMMARY.md", SUMMARY),
        (
            "docs/src/one.md",
            "# One\n\n## Here\n\n[up](#here) [two](two.md) [second](two.md#steps-1) [sub](../src/two.md#steps)",
        ),
        ("docs/src/two.md", TWO),
    ]);
    assert_eq!(problems(repo.path()), Vec::<String>::new());
}

#[test]
fn a_link_to_a_missing_file_fails() {
    let repo = example(&[
        ("README.md", "[gone](docs/src/three.md)"),
        ("docs/src/SUMMARY.md", SUMMARY),
        ("docs/src/one.md", "# One\n"),
        ("docs/src/two.md", TWO),
    ]);
    let problems = problems(repo.path());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("README.md: link `docs/src/three.md`: no such file"));
}

#[test]
fn a_link_to_a_missing_heading_fails() {
    let repo = example(&[
        ("docs/src/SUMMARY.md", SUMMARY),
        (
            "docs/src/one.md",
            "# One\n\n[a](two.md#the-tap) [b](#nowhere) [c](two.md#steps-2)",
        ),
        ("docs/src/two.md", TWO),
    ]);
    let problems = problems(repo.path());
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("no heading `#the-tap` in docs/src/two.md"));
    assert!(problems[0].contains("the-record-command, steps, steps-1"));
    assert!(problems[1].contains("no heading `#nowhere` in docs/src/one.md"));
    assert!(problems[2].contains("`#steps-2`"));
}

#[test]
fn a_chapter_link_out_of_the_book_fails() {
    let repo = example(&[
        ("Cargo.toml", ""),
        ("docs/src/SUMMARY.md", SUMMARY),
        ("docs/src/one.md", "[manifest](../../Cargo.toml)"),
        ("docs/src/two.md", TWO),
    ]);
    let problems = problems(repo.path());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("leaves docs/src"), "{problems:?}");
}

#[test]
fn a_chapter_missing_from_the_summary_fails() {
    let repo = example(&[
        ("docs/src/SUMMARY.md", SUMMARY),
        ("docs/src/one.md", "# One\n"),
        ("docs/src/two.md", TWO),
        ("docs/src/extra/three.md", "# Three\n"),
    ]);
    assert_eq!(
        problems(repo.path()),
        vec!["docs/src/extra/three.md: a chapter that SUMMARY.md does not list".to_string()]
    );
}

#[test]
fn heading_ids_are_made_as_mdbook_makes_them() {
    let page = Page::parse(
        "# A real engine and recording\n\n## The `+engine` targets\n\n\
         ## The tap's cost (2026-12-02)\n\n## Named {#chosen}\n\n## Run\n\n## Run\n\n## Run\n",
    );
    assert_eq!(
        page.anchors,
        [
            "a-real-engine-and-recording",
            "the-engine-targets",
            "the-taps-cost-2026-12-02",
            "chosen",
            "run",
            "run-1",
            "run-2"
        ]
    );
}
