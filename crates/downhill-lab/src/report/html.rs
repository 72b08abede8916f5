//! The HTML builder: [`Page`], [`Section`], [`Table`], [`Cell`], [`Image`], [`Verdict`] and
//! [`escape`]. Every piece of text is escaped; the page carries its own style sheet.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::{LabError, Result};

/// File name of a report inside its folder.
pub const INDEX_FILE: &str = "index.html";

/// Escape `&`, `<`, `>`, `"` and `'` so any text can be placed in HTML content or attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A figure in a report: an `<img>` with a relative `src`, alternative text and an optional
/// caption. When `svg` is set the caption links to the vector version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Relative path of the PNG, e.g. `"loss.png"` or `"adam/loss.png"`.
    pub src: String,
    /// Alternative text (what the figure shows).
    pub alt: String,
    /// Caption under the figure.
    pub caption: Option<String>,
    /// Relative path of the SVG version, linked from the caption.
    pub svg: Option<String>,
}

impl Image {
    /// A figure `src` with alternative text `alt`, no caption.
    pub fn new(src: impl Into<String>, alt: impl Into<String>) -> Self {
        Image {
            src: src.into(),
            alt: alt.into(),
            caption: None,
            svg: None,
        }
    }

    /// The same figure with a caption.
    pub fn with_caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = Some(caption.into());
        self
    }

    /// The same figure with a link to its SVG version; by convention `STEM.png` has
    /// `STEM.svg` beside it.
    pub fn with_svg(mut self) -> Self {
        self.svg = self.src.strip_suffix(".png").map(|s| format!("{s}.svg"));
        self
    }

    fn to_html(&self) -> String {
        let mut html = format!(
            "<figure><a href=\"{src}\"><img src=\"{src}\" alt=\"{alt}\"></a>",
            src = escape(&self.src),
            alt = escape(&self.alt)
        );
        if self.caption.is_some() || self.svg.is_some() {
            html.push_str("<figcaption>");
            if let Some(c) = &self.caption {
                html.push_str(&escape(c));
            }
            if let Some(svg) = &self.svg {
                let _ = write!(html, " <a href=\"{}\">[svg]</a>", escape(svg));
            }
            html.push_str("</figcaption>");
        }
        html.push_str("</figure>");
        html
    }
}

/// One table cell: text and/or links, optionally emphasised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cell {
    /// The text shown (before the links, if any).
    pub text: String,
    /// Links `(text, relative href)` shown after the text.
    pub links: Vec<(String, String)>,
    /// Bold (for example the best value of a column).
    pub strong: bool,
    /// Right-aligned with tabular digits (numbers).
    pub numeric: bool,
    /// Shown in red (for example a diverged run).
    pub alert: bool,
}

impl Cell {
    /// A plain text cell.
    pub fn text(text: impl Into<String>) -> Self {
        Cell {
            text: text.into(),
            ..Cell::default()
        }
    }

    /// A right-aligned number cell.
    pub fn number(text: impl Into<String>) -> Self {
        Cell {
            text: text.into(),
            numeric: true,
            ..Cell::default()
        }
    }

    /// A cell holding one link.
    pub fn link(text: impl Into<String>, href: impl Into<String>) -> Self {
        Cell::links([(text, href)])
    }

    /// A cell holding several links, separated by spaces.
    pub fn links<T: Into<String>, H: Into<String>>(
        links: impl IntoIterator<Item = (T, H)>,
    ) -> Self {
        Cell {
            links: links
                .into_iter()
                .map(|(t, h)| (t.into(), h.into()))
                .collect(),
            ..Cell::default()
        }
    }

    /// The same cell in bold.
    pub fn strong(mut self) -> Self {
        self.strong = true;
        self
    }

    /// The same cell in bold when `yes`.
    pub fn strong_if(mut self, yes: bool) -> Self {
        self.strong |= yes;
        self
    }

    /// The same cell in red when `yes`.
    pub fn alert_if(mut self, yes: bool) -> Self {
        self.alert |= yes;
        self
    }

    fn to_html(&self, tag: &str) -> String {
        let mut inner = escape(&self.text);
        for (text, href) in &self.links {
            if !inner.is_empty() {
                inner.push(' ');
            }
            let _ = write!(inner, "<a href=\"{}\">{}</a>", escape(href), escape(text));
        }
        if self.strong {
            inner = format!("<strong>{inner}</strong>");
        }
        let classes: Vec<&str> = [(self.numeric, "num"), (self.alert, "alert")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, c)| *c)
            .collect();
        if classes.is_empty() {
            format!("<{tag}>{inner}</{tag}>")
        } else {
            format!("<{tag} class=\"{}\">{inner}</{tag}>", classes.join(" "))
        }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::text(text)
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell::text(text)
    }
}

/// A table: a header row and rows of [`Cell`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// A note under the table.
    pub caption: Option<String>,
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows of cells.
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these headers and no rows.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            ..Table::default()
        }
    }

    /// Append a row.
    pub fn row(&mut self, cells: impl IntoIterator<Item = Cell>) -> &mut Self {
        self.rows.push(cells.into_iter().collect());
        self
    }

    /// The table as HTML.
    pub fn to_html(&self) -> String {
        let mut html = String::from("<table>");
        if let Some(c) = &self.caption {
            let _ = write!(html, "<caption>{}</caption>", escape(c));
        }
        html.push_str("<thead><tr>");
        for h in &self.headers {
            let _ = write!(html, "<th>{}</th>", escape(h));
        }
        html.push_str("</tr></thead><tbody>");
        for row in &self.rows {
            html.push_str("<tr>");
            for cell in row {
                html.push_str(&cell.to_html("td"));
            }
            html.push_str("</tr>");
        }
        html.push_str("</tbody></table>");
        html
    }
}

/// How an experiment came out, shown as a coloured badge before the verdict text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The claim holds in our runs.
    Reproduced,
    /// The claim does not hold in our runs.
    NotReproduced,
    /// Partly, or only under some settings.
    Mixed,
    /// The runs cannot decide (too noisy, too small).
    Inconclusive,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Reproduced => "reproduced",
            Outcome::NotReproduced => "not reproduced",
            Outcome::Mixed => "mixed",
            Outcome::Inconclusive => "inconclusive",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Outcome::Reproduced => "yes",
            Outcome::NotReproduced => "no",
            Outcome::Mixed => "mixed",
            Outcome::Inconclusive => "unknown",
        }
    }
}

/// The conclusion of a section: an [`Outcome`] and a sentence or two of evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The outcome badge.
    pub outcome: Outcome,
    /// What the numbers say.
    pub text: String,
}

/// One section of a report: the unit of an experiment write-up.
///
/// Rendered in this order: title, claim (as a quotation), paragraphs, figures (side by side
/// when there is room), tables, verdict, and the command that regenerates the section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Section {
    /// Heading; also the anchor of the section in the table of contents.
    pub title: String,
    /// The claim being tested, with its source (for example a paper and its section).
    pub claim: Option<String>,
    /// Paragraphs of plain text (escaped).
    pub paragraphs: Vec<String>,
    /// Figures.
    pub images: Vec<Image>,
    /// Tables.
    pub tables: Vec<Table>,
    /// The conclusion.
    pub verdict: Option<Verdict>,
    /// The exact command that regenerates this section.
    pub command: Option<String>,
}

impl Section {
    /// An empty section titled `title`.
    pub fn new(title: impl Into<String>) -> Self {
        Section {
            title: title.into(),
            ..Section::default()
        }
    }

    /// Set the claim.
    pub fn claim(mut self, claim: impl Into<String>) -> Self {
        self.claim = Some(claim.into());
        self
    }

    /// Add a paragraph.
    pub fn paragraph(mut self, text: impl Into<String>) -> Self {
        self.paragraphs.push(text.into());
        self
    }

    /// Add a figure.
    pub fn image(mut self, image: Image) -> Self {
        self.images.push(image);
        self
    }

    /// Add a table.
    pub fn table(mut self, table: Table) -> Self {
        self.tables.push(table);
        self
    }

    /// Set the verdict.
    pub fn verdict(mut self, outcome: Outcome, text: impl Into<String>) -> Self {
        self.verdict = Some(Verdict {
            outcome,
            text: text.into(),
        });
        self
    }

    /// Set the command that regenerates the section.
    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }

    fn anchor(&self, index: usize) -> String {
        let slug: String = self
            .title
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        format!("s{index}-{}", slug.trim_matches('-'))
    }

    fn to_html(&self, index: usize) -> String {
        let mut html = format!(
            "<section id=\"{}\"><h2>{}</h2>",
            self.anchor(index),
            escape(&self.title)
        );
        if let Some(claim) = &self.claim {
            let _ = write!(
                html,
                "<blockquote class=\"claim\"><span class=\"tag\">claim</span> {}</blockquote>",
                escape(claim)
            );
        }
        for p in &self.paragraphs {
            let _ = write!(html, "<p>{}</p>", escape(p));
        }
        if !self.images.is_empty() {
            html.push_str("<div class=\"figures\">");
            for image in &self.images {
                html.push_str(&image.to_html());
            }
            html.push_str("</div>");
        }
        for table in &self.tables {
            html.push_str(&table.to_html());
        }
        if let Some(v) = &self.verdict {
            let _ = write!(
                html,
                "<p class=\"verdict\"><span class=\"badge {}\">{}</span> {}</p>",
                v.outcome.class(),
                v.outcome.label(),
                escape(&v.text)
            );
        }
        if let Some(cmd) = &self.command {
            let _ = write!(
                html,
                "<p class=\"cmdlabel\">Reproduce:</p><pre><code>{}</code></pre>",
                escape(cmd)
            );
        }
        html.push_str("</section>");
        html
    }
}

/// A whole report page: a title, an introduction, sections and an optional command that
/// regenerates the page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// `<title>` and top heading.
    pub title: String,
    /// Introductory paragraphs (escaped).
    pub intro: Vec<String>,
    /// Key facts shown as a definition list under the introduction (name, value).
    pub facts: Vec<(String, String)>,
    /// The command that regenerates the whole page.
    pub command: Option<String>,
    /// The sections, in order; with more than three a table of contents is added.
    pub sections: Vec<Section>,
}

impl Page {
    /// An empty page titled `title`.
    pub fn new(title: impl Into<String>) -> Self {
        Page {
            title: title.into(),
            ..Page::default()
        }
    }

    /// A page holding only `section`, titled as it is (an experiment's own page).
    pub fn of_section(section: Section) -> Self {
        Page {
            title: section.title.clone(),
            sections: vec![section],
            ..Page::default()
        }
    }

    /// The page as a complete HTML document.
    pub fn to_html(&self) -> String {
        let mut html = String::with_capacity(8192);
        let _ = write!(
            html,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
             <h1>{title}</h1>\n",
            title = escape(&self.title)
        );
        for p in &self.intro {
            let _ = writeln!(html, "<p>{}</p>", escape(p));
        }
        if !self.facts.is_empty() {
            html.push_str("<dl class=\"facts\">");
            for (k, v) in &self.facts {
                let _ = write!(html, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(v));
            }
            html.push_str("</dl>\n");
        }
        if let Some(cmd) = &self.command {
            let _ = writeln!(
                html,
                "<p class=\"cmdlabel\">Reproduce this page:</p><pre><code>{}</code></pre>",
                escape(cmd)
            );
        }
        if self.sections.len() > 3 {
            html.push_str("<nav><ol>");
            for (i, s) in self.sections.iter().enumerate() {
                let _ = write!(
                    html,
                    "<li><a href=\"#{}\">{}</a></li>",
                    s.anchor(i),
                    escape(&s.title)
                );
            }
            html.push_str("</ol></nav>\n");
        }
        for (i, s) in self.sections.iter().enumerate() {
            html.push_str(&s.to_html(i));
            html.push('\n');
        }
        let _ = write!(
            html,
            "<footer>Generated by downhill-lab {} from the files in this folder.</footer>\n\
             </main>\n</body>\n</html>\n",
            env!("CARGO_PKG_VERSION")
        );
        html
    }

    /// Write the page to `dir/index.html` (creating `dir`) and return that path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
        let path = dir.join(INDEX_FILE);
        std::fs::write(&path, self.to_html()).map_err(|e| LabError::io(&path, e))?;
        Ok(path)
    }
}

/// The page style: system fonts, a readable measure, striped tables, no external resources.
const STYLE: &str = "\
body{margin:0;background:#fafafa;color:#1d1d1f;font:16px/1.5 system-ui,-apple-system,'Segoe UI',\
Roboto,'DejaVu Sans',sans-serif}\
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px;background:#fff}\
h1{font-size:1.9em;margin:.2em 0 .4em}h2{font-size:1.35em;margin:1.6em 0 .5em;\
border-bottom:1px solid #e3e3e3;padding-bottom:.2em}\
pre{background:#f3f4f6;border:1px solid #e1e3e6;border-radius:6px;padding:10px 12px;\
overflow-x:auto;font-size:.88em;white-space:pre-wrap;word-break:break-all}\
code{font-family:ui-monospace,'DejaVu Sans Mono',Menlo,Consolas,monospace}\
.cmdlabel{margin:.8em 0 .2em;font-weight:600;font-size:.92em;color:#444}\
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:.95em}\
dl.facts dt{font-weight:600;color:#555}dl.facts dd{margin:0}\
.figures{display:flex;flex-wrap:wrap;gap:16px}\
figure{margin:0;flex:1 1 520px;max-width:100%}figure img{width:100%;height:auto;\
border:1px solid #e6e6e6;border-radius:4px}\
figcaption{font-size:.88em;color:#555;text-align:center}\
table{border-collapse:collapse;margin:14px 0;font-size:.93em;width:100%}\
caption{caption-side:bottom;text-align:left;font-size:.88em;color:#555;padding-top:6px}\
th,td{padding:5px 10px;border-bottom:1px solid #e5e5e5;text-align:left;vertical-align:top}\
th{background:#f1f3f5;font-weight:600}tbody tr:nth-child(even){background:#fafbfc}\
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
td a{margin-right:.6em}\
blockquote.claim{margin:.6em 0;padding:8px 14px;border-left:4px solid #8aa4d6;background:#f4f7fc}\
.tag{font-size:.75em;text-transform:uppercase;letter-spacing:.06em;color:#4a6496;font-weight:700}\
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.8em;font-weight:700;\
text-transform:uppercase;letter-spacing:.04em;color:#fff}\
.badge.yes{background:#2e7d32}.badge.no{background:#c62828}.badge.mixed{background:#ef6c00}\
.badge.unknown{background:#757575}\
td.alert{color:#c62828;font-weight:600}\
nav ol{columns:2;font-size:.95em}\
footer{margin-top:2.5em;font-size:.82em;color:#777}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_render_claim_figures_verdict_and_command() {
        let mut page = Page::new("Experiments");
        page.sections.push(
            Section::new("Adaptive methods generalise worse")
                .claim("Wilson et al. 2017, §3.3: adaptive methods find worse solutions")
                .paragraph("We train to zero loss.")
                .image(
                    Image::new("w1/error.png", "test error")
                        .with_caption("a < b")
                        .with_svg(),
                )
                .verdict(Outcome::Reproduced, "GD 0% test error; Adam 41%")
                .command("downhill experiment w1"),
        );
        let html = page.to_html();
        assert!(html.contains("<span class=\"tag\">claim</span> Wilson"));
        assert!(html.contains("<img src=\"w1/error.png\""));
        assert!(html.contains("href=\"w1/error.svg\""));
        assert!(html.contains("a &lt; b"));
        assert!(html.contains("badge yes\">reproduced"));
        assert!(html.contains("<pre><code>downhill experiment w1</code></pre>"));
    }

    #[test]
    fn escaping_covers_attributes() {
        assert_eq!(escape("a&b<c>\"d'"), "a&amp;b&lt;c&gt;&quot;d&#39;");
        let cell = Cell::link("x", "a\"b.png").strong();
        assert_eq!(
            cell.to_html("td"),
            "<td><strong><a href=\"a&quot;b.png\">x</a></strong></td>"
        );
    }
}
