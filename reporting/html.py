"""``report.html`` (``--html``): the report as one self-contained page, figures embedded as base64."""
import base64
import html
import re

HTML_STYLE = """body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;font-size:11pt;line-height:1.45;
max-width:46em;margin:2em auto;padding:0 1em;color:#1f2328}h1,h2,h3{line-height:1.25}h2{border-bottom:1px solid #d0d7de;
padding-bottom:.2em;margin-top:1.6em}code{font-family:Menlo,Consolas,monospace;font-size:85%;background:#f3f4f6;
padding:.1em .3em;border-radius:3px}pre{background:#f6f8fa;padding:.8em;font-size:8pt;line-height:1.3;
white-space:pre-wrap;word-break:break-all}pre code{background:none;padding:0;font-size:inherit}
table{border-collapse:collapse;margin:.6em 0;font-size:9pt}th,td{border:1px solid #d0d7de;padding:.25em .5em;
vertical-align:top}th{background:#f6f8fa}td.r{text-align:right}td code{word-break:break-all}img{max-width:100%}
blockquote{margin:.8em 0;padding:.1em 1em;border-left:4px solid #d0d7de;color:#444}
figure{margin:.8em 0;break-inside:avoid}@media print{body{margin:0;max-width:none}h2,h3{break-after:avoid}}"""


def inline_html(text, files):
    """The inline Markdown this tool writes (code, bold, italics, images) as HTML; images are
    embedded from ``files`` (name -> PNG bytes) as base64."""
    codes = []

    def keep(m):
        codes.append(f"<code>{html.escape(m.group(1))}</code>")
        return f"\x00{len(codes) - 1}\x00"

    def image(m):
        data = files.get(html.unescape(m.group(2)))
        if data is None:
            return f"[{m.group(1)}: not found]"
        return f'<img alt="{m.group(1)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'

    text = re.sub(r"`([^`]*)`", keep, text.replace("\\|", "|"))
    text = html.escape(text, quote=False)
    text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", image, text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])", r"<em>\1</em>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], text)


def table_cells(line):
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def markdown_to_html(text, files, title):
    """One self-contained HTML page of the Markdown this tool writes: headings, paragraphs, fenced
    code, tables, block quotes, lists and images (embedded), for printing to PDF from a browser."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append(f"<pre><code>{html.escape(chr(10).join(lines[i + 1:j]))}</code></pre>")
            i = j + 1
        elif m := re.match(r"(#{1,4}) (.*)", line):
            n = len(m.group(1))
            out.append(f"<h{n}>{inline_html(m.group(2), files)}</h{n}>")
            i += 1
        elif line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            head, align, body = table_cells(lines[i]), table_cells(lines[i + 1]), lines[i + 2:j]
            right = [a.endswith(":") for a in align]
            rows = ["<tr>" + "".join(f"<th>{inline_html(c, files)}</th>" for c in head) + "</tr>"]
            for row in body:
                rows.append("<tr>" + "".join(f"<td{' class=r' if k < len(right) and right[k] else ''}>"
                                             f"{inline_html(c, files)}</td>" for k, c in enumerate(table_cells(row)))
                            + "</tr>")
            out.append("<table>" + "".join(rows) + "</table>")
            i = j
        elif re.match(r"(> |- |\d+\. )", line):
            kind = line[0] if line[0] in ">-" else "1"
            j, items = i, []
            while j < len(lines) and lines[j].strip() and (lines[j].startswith(kind) if kind in ">-" else
                                                           re.match(r"\d+\. ", lines[j])):
                items.append(re.sub(r"^(> |- |\d+\. )", "", lines[j]))
                j += 1
            if kind == ">":
                out.append(f"<blockquote><p>{inline_html(' '.join(items), files)}</p></blockquote>")
            else:
                tag = "ul" if kind == "-" else "ol"
                out.append(f"<{tag}>" + "".join(f"<li>{inline_html(t, files)}</li>" for t in items) + f"</{tag}>")
            i = j
        elif line.startswith("!["):
            out.append(f"<figure>{inline_html(line, files)}</figure>")
            i += 1
        else:
            j = i
            while j < len(lines) and lines[j].strip() and not re.match(r"(```|#|\||> |- |\d+\. |!\[)", lines[j]):
                j += 1
            out.append(f"<p>{inline_html(' '.join(lines[i:max(j, i + 1)]), files)}</p>")
            i = max(j, i + 1)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{HTML_STYLE}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")
