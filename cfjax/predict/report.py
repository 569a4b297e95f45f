"""report.html: one self-contained static page (no server, no network, no CDN): the summary, and a table of
every photo sortable (click a column's header) and filterable (class, abstained, p_fake and mask area
ranges, a name search) by plain inline JavaScript. Images are linked relative to the page."""

import html as escape_html
from urllib.parse import quote

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:middle}
th{background:#eee;cursor:pointer;user-select:none;position:sticky;top:0}th.sorted-asc:after{content:" \\25B2"}
th.sorted-desc:after{content:" \\25BC"}tr.abstained{background:#fff3cd}img{max-height:120px;display:block}
.filters{margin:0.8em 0;display:flex;gap:1em;flex-wrap:wrap;align-items:center}.num{text-align:right}
.muted{color:#777}code{background:#f4f4f4;padding:0 3px}input[type=number]{width:5em}
"""

_SCRIPT = """
(function(){
  const table=document.getElementById('predictions'), body=table.tBodies[0];
  const rows=Array.from(body.rows);
  const get=id=>document.getElementById(id);
  function num(v){const x=parseFloat(v);return isNaN(x)?null:x;}
  function apply(){
    const cls=get('f-class').value, ab=get('f-abstained').value, text=get('f-text').value.toLowerCase();
    const pmin=num(get('f-pmin').value), pmax=num(get('f-pmax').value);
    const amin=num(get('f-amin').value), amax=num(get('f-amax').value);
    let shown=0;
    for(const r of rows){
      const d=r.dataset, p=num(d.pfake), a=num(d.area);
      let ok=(cls===''||d.cls===cls)&&(ab===''||d.abstained===ab)&&(!text||d.path.toLowerCase().includes(text));
      if(pmin!==null)ok=ok&&p!==null&&p>=pmin; if(pmax!==null)ok=ok&&p!==null&&p<=pmax;
      if(amin!==null)ok=ok&&a!==null&&a>=amin; if(amax!==null)ok=ok&&a!==null&&a<=amax;
      r.style.display=ok?'':'none'; if(ok)shown++;
    }
    get('shown').textContent=shown;
  }
  for(const id of ['f-class','f-abstained','f-text','f-pmin','f-pmax','f-amin','f-amax']){
    get(id).addEventListener('input',apply);get(id).addEventListener('change',apply);
  }
  let sortKey=null, ascending=true;
  for(const th of table.tHead.rows[0].cells){
    if(!th.dataset.key)continue;
    th.addEventListener('click',()=>{
      const key=th.dataset.key; ascending=(sortKey===key)?!ascending:true; sortKey=key;
      for(const other of table.tHead.rows[0].cells)other.classList.remove('sorted-asc','sorted-desc');
      th.classList.add(ascending?'sorted-asc':'sorted-desc');
      const numeric=th.dataset.type==='num';
      rows.sort((x,y)=>{
        let a=x.dataset[key], b=y.dataset[key];
        if(numeric){a=num(a);b=num(b);if(a===null)return 1;if(b===null)return -1;return ascending?a-b:b-a;}
        return ascending?a.localeCompare(b):b.localeCompare(a);
      });
      for(const r of rows)body.appendChild(r);
    });
  }
  apply();
})();
"""


def _e(value) -> str:
    return escape_html.escape(str(value), quote=True)


def _link(relative: str) -> str:
    return quote(relative)  # output names are ASCII already; quoting keeps any other name a valid URL


def _image_cell(record: dict, name: str) -> str:
    thumb = record.get("thumbs", {}).get(name)
    if thumb is None:
        return '<td class="muted">-</td>'
    target = record.get("files", {}).get(name) or thumb
    return f'<td><a href="{_link(target)}"><img src="{_link(thumb)}" alt="{_e(name)} of {_e(record["path"])}" ' \
           f'loading="lazy"></a></td>'


def _number(record: dict, field: str, digits: int = 3) -> str:
    value = record.get(field)
    return "" if value is None else f"{value:.{digits}f}"


def html(summary: dict, records: list) -> str:
    """The page for summary.json's content and the per-photo records."""
    offers = set(summary["offers"])
    has_class, has_p_fake, has_mask = "probabilities" in offers, "p_fake" in offers, "saliency" in offers
    abstain = summary["abstain"]
    can_abstain = abstain.get("score") is not None
    has_counterfactual = "counterfactual" in offers
    columns = [("#", "index", "num"), ("photo", None, None)]
    columns += [("overlay", None, None)] if has_mask else []
    columns += [("counterfactual", None, None)] if has_counterfactual else []
    columns += [("file", "path", "text")]
    columns += [("class", "cls", "text"), ("confidence", "confidence", "num")] if has_class else []
    columns += [("p_fake", "pfake", "num")] if has_p_fake else []
    columns += [("abstained", "abstained", "text")] if can_abstain else []
    columns += [("mask area", "area", "num")] if has_mask else []
    head = "".join(f'<th data-key="{key}" data-type="{kind}">{_e(label)}</th>' if key else f"<th>{_e(label)}</th>"
                   for label, key, kind in columns)
    rows = []
    for index, record in enumerate(records):
        data = {"index": index, "path": record["path"], "cls": record.get("class_name", ""),
                "confidence": _number(record, "confidence"), "pfake": _number(record, "p_fake", 4),
                "abstained": "yes" if record.get("abstained") else "no", "area": _number(record, "mask_area", 4)}
        cells = [f'<td class="num">{index}</td>', _image_cell(record, "photo")]
        cells += [_image_cell(record, "overlay")] if has_mask else []
        cells += [_image_cell(record, "counterfactual")] if has_counterfactual else []
        size = f'{record["width"]}×{record["height"]}'
        cells.append(f'<td>{_e(record["path"])}<br><span class="muted">{size}</span></td>')
        if has_class:
            cells += [f"<td>{_e(data['cls'])}</td>", f'<td class="num">{data["confidence"]}</td>']
        cells += [f'<td class="num">{data["pfake"]}</td>'] if has_p_fake else []
        cells += [f"<td>{data['abstained']}</td>"] if can_abstain else []
        if has_mask:
            cells.append(f'<td class="num">{data["area"]}</td>')
        attributes = " ".join(f'data-{name}="{_e(value)}"' for name, value in data.items())
        css = ' class="abstained"' if record.get("abstained") else ""
        rows.append(f"<tr{css} {attributes}>{''.join(cells)}</tr>")
    class_options = "".join(f'<option value="{_e(name)}">{_e(name)}</option>'
                            for name in (summary.get("class_names") or []))
    filters = ['<label>file <input id="f-text" type="search" placeholder="name contains"></label>']
    filters.append(f'<label>class <select id="f-class"><option value="">any</option>{class_options}</select></label>'
                   if has_class else '<select id="f-class" hidden><option value=""></option></select>')
    filters.append('<label>abstained <select id="f-abstained"><option value="">any</option><option>yes</option>'
                   '<option>no</option></select></label>' if can_abstain else
                   '<select id="f-abstained" hidden><option value=""></option></select>')
    hidden = "" if has_p_fake else " hidden"
    filters.append(f'<span{hidden}>p_fake <input id="f-pmin" type="number" step="0.01" placeholder="min" size="5"> '
                   f'– <input id="f-pmax" type="number" step="0.01" placeholder="max" size="5"></span>')
    hidden = "" if has_mask else " hidden"
    filters.append(f'<span{hidden}>mask area <input id="f-amin" type="number" step="0.01" placeholder="min" '
                   f'size="5"> – <input id="f-amax" type="number" step="0.01" placeholder="max" size="5"></span>')
    counts = summary["counts"]
    mask = summary.get("mask")
    facts = [f"run <code>{_e(summary['workdir'])}</code> ({_e(summary['model'])}, step {summary['step']}), "
             f"folder <code>{_e(summary['folder'])}</code>",
             f"{counts['photos_found']} photos found, {counts['predicted']} predicted, {counts['skipped']} skipped, "
             f"{counts['abstained']} abstained",
             f"outputs: {_e(', '.join(summary['offers']))}"]
    if has_class or has_p_fake:
        threshold = ("none" if abstain["threshold"] is None or not can_abstain
                     else f"{abstain['score']} &gt; {abstain['threshold']:.4g}")
        facts.append(f"abstain: {threshold} ({_e(abstain['rule'])})")
    if mask:
        facts.append(f"mask: {_e(mask['rule'])}")
    if summary.get("classes"):
        facts.append("classes: " + ", ".join(f"{_e(k)}: {v}" for k, v in summary["classes"].items()))
    skipped = "".join(f"<li><code>{_e(s['path'])}</code>: {_e(s['reason'])}</li>" for s in summary["skipped"])
    skipped_html = f"<h2>Skipped files</h2><ul id=\"skipped\">{skipped}</ul>" if skipped else ""
    others = summary.get("not_images") or {"count": 0}
    if others["count"]:
        left = others["count"] - len(others["examples"])
        more = f", and {left} more" if left else ""
        skipped_html += (f"<h2>Other files, not read</h2><p id=\"not-images\">{others['count']} file(s) not of a type "
                         f"read here ({_e(' '.join(others['read_types']))}): "
                         f"{', '.join(f'<code>{_e(name)}</code>' for name in others['examples'])}{more}</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cfjax predictions: {_e(summary['config_name'])}</title>
<style>{_STYLE}</style></head><body>
<h1>cfjax predictions</h1>
<ul>{''.join(f'<li>{fact}</li>' for fact in facts)}</ul>
<div class="filters">{''.join(filters)}<span><b id="shown">{len(records)}</b> of {len(records)} shown</span></div>
<table id="predictions"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
{skipped_html}
<script>{_SCRIPT}</script>
</body></html>
"""
