/* html.c — the dashboard: one static page (script and style inline, no
 * network, no server) over runs from the store, with the PNGs each run
 * kept copied beside it. */
#include "track_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fm/fm_io.h"

/* The images of a run's folder the page shows, in this order. */
static const char *const images[] = {"acc.png", "loss.png", "confusion_matrix.png", "errors.png"};
#define N_IMAGES (sizeof images / sizeof images[0])

static const char page_head[] =
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<title>fmhost runs</title>\n<style>\n"
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}\n"
    "h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .4em}\n"
    ".meta{color:#666}table{border-collapse:collapse;margin:.5em 0}\n"
    "th,td{padding:3px 7px;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}\n"
    "#runs{font-size:13px}#runs td:nth-child(7){white-space:normal;max-width:15em}\n"
    "td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\n"
    "#runs th{cursor:pointer;background:#f3f3f3;user-select:none}\n"
    "#runs th.sorted-asc::after{content:' \\25B2'}#runs th.sorted-desc::after{content:' \\25BC'}\n"
    "#runs tbody tr:hover{background:#f5f9ff}\n"
    ".completed{color:#176117}.failed,.diverged{color:#a11}.interrupted,.stopped{color:#a60}\n"
    ".running{color:#136}\n"
    ".run{border-top:2px solid #ccc;margin-top:1.5em;padding-top:.3em}\n"
    ".imgs img{max-width:460px;width:32%;min-width:260px;margin:4px;border:1px solid #ddd;vertical-align:top}\n"
    ".bar{display:inline-block;height:10px;background:#4a7ebb;vertical-align:middle}\n"
    "svg text{font:11px system-ui,sans-serif}\n"
    "</style></head>\n<body>\n";

/* The page's script: builds the table (sorted by a click on a heading, or
 * by the address's #sort=KEY[&asc], which a click updates), the overlay and
 * a section per run from RUNS, then records in <body> what it rendered
 * (data-rows) and, once every image settled, how many loaded and failed. */
static const char page_script[] =
    "<script>\n"
    "'use strict';\n"
    "const COLS=[['id','id',1],['started','started (UTC)',0],['kind','kind',0],['model','model',0],"
    "['status','status',0],['hparams','hyper-parameters',0],['epochs_run','epochs',1],"
    "['best_epoch','best',1],['val_acc','val acc',1],['test_acc','test acc',1],"
    "['val_loss','val loss',1],['wall_seconds','seconds',1],['sweep','sweep',0]];\n"
    "const COLORS=['#1f77b4','#d62728','#2ca02c','#ff7f0e','#9467bd','#8c564b','#e377c2','#17becf',"
    "'#7f7f7f','#bcbd22'];\n"
    "function el(tag,attrs,text){const e=document.createElement(tag);"
    "for(const k in attrs||{})e.setAttribute(k,attrs[k]);if(text!==undefined)e.textContent=text;"
    "return e;}\n"
    "function fmt(v,k){if(v===null||v===undefined)return '-';if(typeof v==='number'){"
    "if(k==='wall_seconds')return v.toFixed(1);if(!Number.isInteger(v))return v.toFixed(4);}"
    "return String(v);}\n"
    "let sortKey='id',sortAsc=false;const checked=new Set();\n"
    "function renderTable(){const t=document.getElementById('runs');t.textContent='';"
    "const head=el('thead'),hr=el('tr');hr.appendChild(el('th',{},'overlay'));"
    "for(const [k,title,num] of COLS){const th=el('th',{'data-key':k,class:(num?'num ':'')+"
    "(k===sortKey?(sortAsc?'sorted-asc':'sorted-desc'):'')},title);"
    "th.onclick=()=>{if(sortKey===k)sortAsc=!sortAsc;else{sortKey=k;sortAsc=!num;}"
    "history.replaceState(null,'','#sort='+sortKey+(sortAsc?'&asc':''));renderTable();};"
    "hr.appendChild(th);}head.appendChild(hr);t.appendChild(head);"
    "const rows=RUNS.slice().sort((a,b)=>{const x=a[sortKey],y=b[sortKey];"
    "if(x===y)return 0;if(x===null||x===undefined)return 1;if(y===null||y===undefined)return -1;"
    "return (x<y?-1:1)*(sortAsc?1:-1);});const body=el('tbody');"
    "for(const r of rows){const tr=el('tr',{'data-id':r.id});const td=el('td');"
    "const cb=el('input',{type:'checkbox'});cb.checked=checked.has(r.id);"
    "cb.onchange=()=>{if(cb.checked)checked.add(r.id);else checked.delete(r.id);renderOverlay();};"
    "td.appendChild(cb);tr.appendChild(td);"
    "for(const [k,,num] of COLS){const c=el('td',{class:(num?'num ':'')+(k==='status'?r.status:'')});"
    "if(k==='id'){const a=el('a',{href:'#run-'+r.id},String(r.id));c.appendChild(a);}"
    "else c.textContent=fmt(r[k],k);tr.appendChild(c);}body.appendChild(tr);}"
    "t.appendChild(body);document.body.dataset.rows=String(rows.length);}\n"
    "function chart(series,ylabel,w,h){const NS='http://www.w3.org/2000/svg';"
    "const svg=document.createElementNS(NS,'svg');svg.setAttribute('width',w);"
    "svg.setAttribute('height',h);svg.setAttribute('role','img');"
    "const pts=series.flatMap(s=>s.points).filter(p=>p[1]!==null);"
    "if(!pts.length){const t=document.createElementNS(NS,'text');t.setAttribute('x',10);"
    "t.setAttribute('y',20);t.textContent='no epochs recorded';svg.appendChild(t);return svg;}"
    "const L=50,R=10,T=24,B=34;let x1=Math.max(...pts.map(p=>p[0])),x0=1;if(x1===x0)x1=x0+1;"
    "let y0=Math.min(...pts.map(p=>p[1])),y1=Math.max(...pts.map(p=>p[1]));"
    "if(y1-y0<1e-9){y0-=0.5;y1+=0.5;}"
    "const X=x=>L+(x-x0)/(x1-x0)*(w-L-R),Y=y=>T+(1-(y-y0)/(y1-y0))*(h-T-B);"
    "function line(x,y,x2,y2,c){const l=document.createElementNS(NS,'line');"
    "l.setAttribute('x1',x);l.setAttribute('y1',y);l.setAttribute('x2',x2);l.setAttribute('y2',y2);"
    "l.setAttribute('stroke',c);svg.appendChild(l);}"
    "function text(x,y,s,anchor){const t=document.createElementNS(NS,'text');t.setAttribute('x',x);"
    "t.setAttribute('y',y);if(anchor)t.setAttribute('text-anchor',anchor);t.textContent=s;"
    "svg.appendChild(t);}"
    "line(L,h-B,w-R,h-B,'#999');line(L,T,L,h-B,'#999');"
    "for(let i=0;i<=4;i++){const v=y0+(y1-y0)*i/4;line(L-4,Y(v),w-R,Y(v),'#eee');"
    "text(L-6,Y(v)+4,v.toFixed(3),'end');}"
    "const step=Math.max(1,Math.ceil((x1-x0)/10));"
    "for(let x=x0;x<=x1;x+=step){line(X(x),h-B,X(x),h-B+4,'#999');text(X(x),h-B+16,String(x),'middle');}"
    "text((L+w-R)/2,h-3,'epoch','middle');text(L,14,ylabel);"
    "series.forEach((s,i)=>{const p=document.createElementNS(NS,'polyline');"
    "p.setAttribute('fill','none');p.setAttribute('stroke',s.color||COLORS[i%COLORS.length]);"
    "p.setAttribute('stroke-width','2');p.setAttribute('points',s.points.filter(q=>q[1]!==null)"
    ".map(q=>X(q[0]).toFixed(1)+','+Y(q[1]).toFixed(1)).join(' '));svg.appendChild(p);});"
    "return svg;}\n"
    "function curve(r,k){return r.epochs.map(e=>[e.epoch,e[k]]);}\n"
    "function renderOverlay(){const box=document.getElementById('overlay');box.textContent='';"
    "const sel=RUNS.filter(r=>checked.has(r.id));"
    "if(!sel.length){box.appendChild(el('p',{class:'meta'},'Tick runs in the table to overlay "
    "their validation curves.'));return;}"
    "const legend=el('p');sel.forEach((r,i)=>{const s=el('span',{style:'color:'+"
    "COLORS[i%COLORS.length]+';margin-right:1.2em'},'\\u25A0 run '+r.id+' '+r.model+' '+"
    "(r.hparams||''));legend.appendChild(s);});box.appendChild(legend);"
    "box.appendChild(chart(sel.map((r,i)=>({points:curve(r,'val_acc'),color:COLORS[i%COLORS.length]})),"
    "'validation accuracy',560,300));"
    "box.appendChild(chart(sel.map((r,i)=>({points:curve(r,'val_loss'),color:COLORS[i%COLORS.length]})),"
    "'validation loss',560,300));}\n"
    "function renderRuns(){const box=document.getElementById('details');"
    "for(const r of RUNS){const d=el('section',{class:'run',id:'run-'+r.id});"
    "d.appendChild(el('h2',{},'Run '+r.id+': '+r.model+' ('+r.kind+', '+r.status+')'));"
    "d.appendChild(el('p',{class:'meta'},(r.command||'')+(r.message?' \\u2014 '+r.message:'')));"
    "const kv=el('table');for(const [k,v] of [['started',r.started],['ended',r.ended],"
    "['hyper-parameters',r.hparams],['seed',r.seed],['kernels',r.kernels],"
    "['precision',r.precision],['test accuracy',fmt(r.test_acc)],['test loss',fmt(r.test_loss)],"
    "['best epoch',r.best_epoch+' of '+r.epochs_run],['wall time (s)',fmt(r.wall_seconds,'wall_seconds')],"
    "['peak RSS (MiB)',(r.peak_rss_kb/1024).toFixed(1)],['plugin sha256',r.plugin_sha256],"
    "['files',r.run_dir]]){const tr=el('tr');tr.appendChild(el('th',{},k));"
    "tr.appendChild(el('td',{},v===null||v===undefined?'-':String(v)));kv.appendChild(tr);}"
    "d.appendChild(kv);"
    "if(r.epochs.length){const c=el('div');"
    "c.appendChild(chart([{points:curve(r,'train_acc'),color:'#888'},{points:curve(r,'val_acc'),"
    "color:'#1f77b4'}],'accuracy (grey: train)',420,240));"
    "c.appendChild(chart([{points:curve(r,'train_loss'),color:'#888'},{points:curve(r,'val_loss'),"
    "color:'#d62728'}],'loss (grey: train)',420,240));d.appendChild(c);}"
    "if(r.per_class.length){const t=el('table');const h=el('tr');"
    "['class','test accuracy','','images'].forEach((x,i)=>h.appendChild(el('th',{class:i%2?'num':''},x)));"
    "t.appendChild(h);for(const c of r.per_class){const tr=el('tr');tr.appendChild(el('td',{},c.class));"
    "tr.appendChild(el('td',{class:'num'},fmt(c.accuracy)));const b=el('td');"
    "b.appendChild(el('span',{class:'bar',style:'width:'+Math.round(200*(c.accuracy||0))+'px'}));"
    "tr.appendChild(b);tr.appendChild(el('td',{class:'num'},String(c.support)));t.appendChild(tr);}"
    "d.appendChild(el('h3',{},'Per-class test accuracy'));d.appendChild(t);}"
    "if(r.images.length){const im=el('div',{class:'imgs'});for(const f of r.images)"
    "im.appendChild(el('img',{src:f,alt:f,loading:'eager'}));d.appendChild(im);}"
    "box.appendChild(d);}}\n"
    "function watchImages(){const imgs=[...document.images];let ok=0,bad=0;"
    "const done=()=>{document.body.dataset.images=String(imgs.length);"
    "document.body.dataset.imagesLoaded=String(ok);document.body.dataset.imagesFailed=String(bad);"
    "if(ok+bad===imgs.length)document.body.dataset.ready='1';};"
    "for(const i of imgs){if(i.complete){if(i.naturalWidth>0)ok++;else bad++;}else{"
    "i.addEventListener('load',()=>{ok++;done();});i.addEventListener('error',()=>{bad++;done();});}}"
    "done();}\n"
    "RUNS.filter(r=>r.epochs.length).slice(0,3).forEach(r=>checked.add(r.id));\n"
    "{const h=new URLSearchParams(location.hash.slice(1));"
    "if(COLS.some(c=>c[0]===h.get('sort'))){sortKey=h.get('sort');sortAsc=h.has('asc');}}\n"
    "renderTable();renderOverlay();renderRuns();watchImages();\n"
    "</script>\n</body></html>\n";

/* Writes JSON text safe inside <script>: '<' only occurs inside its
 * strings, where \u003c means the same, so no "</script>" or "<!--" can
 * end or disturb the element. */
static void put_script_safe(FILE *f, const char *s)
{
    for (; *s; s++)
        if (*s == '<')
            fputs("\\u003c", f);
        else
            fputc(*s, f);
}

fm_status fm_track_write_html(const char *dir, const fm_track_run *runs, int n, const char *db_path)
{
    fm_status st = fm_mkdirs(dir);
    if (st != FM_OK) return st;
    /* Each run's images, copied under dir/runs/<id>/. */
    char **lists = fm_xcalloc((size_t)n + 1, sizeof *lists);
    for (int i = 0; i < n && st == FM_OK; i++) {
        size_t cap = 64 + N_IMAGES * 64;
        lists[i] = fm_xcalloc(cap, 1);
        strcpy(lists[i], "[");
        for (size_t k = 0; k < N_IMAGES && runs[i].run_dir; k++) {
            char src[4400], sub[4400], dst[4500];
            snprintf(src, sizeof src, "%s/%s", runs[i].run_dir, images[k]);
            if (access(src, R_OK) != 0) continue;
            snprintf(sub, sizeof sub, "%s/runs/%lld", dir, (long long)runs[i].id);
            snprintf(dst, sizeof dst, "%s/%s", sub, images[k]);
            if ((st = fm_mkdirs(sub)) != FM_OK || (st = track_copy_file(src, dst)) != FM_OK) break;
            snprintf(lists[i] + strlen(lists[i]), cap - strlen(lists[i]), "%s\"runs/%lld/%s\"",
                     lists[i][1] ? "," : "", (long long)runs[i].id, images[k]);
        }
        strcat(lists[i], "]");
    }
    char path[4200], tmp[4400];
    FILE *f = NULL;
    snprintf(path, sizeof path, "%s/index.html", dir);
    if (st == FM_OK && !(f = fm_atomic_open(path, tmp, sizeof tmp))) st = fm_error_status();
    if (st == FM_OK) {
        char now[32];
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(now, sizeof now, "%Y-%m-%d %H:%M:%S UTC", &tm);
        fputs(page_head, f);
        fputs("<h1>fmhost runs</h1>\n<p class=\"meta\" id=\"source\"></p>\n"
              "<table id=\"runs\"></table>\n<h2>Validation curves of the ticked runs</h2>\n"
              "<div id=\"overlay\"></div>\n<div id=\"details\"></div>\n<script>\nconst SOURCE=",
              f);
        /* The store's path and the time, as a JSON string set by the script. */
        fputc('"', f);
        for (const char *c = db_path; *c; c++)
            if (*c == '"' || *c == '\\')
                fprintf(f, "\\%c", *c);
            else if ((unsigned char)*c < 0x20)
                fprintf(f, "\\u%04x", *c);
            else if (c[0] == '<')
                fputs("\\u003c", f);
            else
                fputc(*c, f);
        fprintf(f, " \\u2014 %d runs, written %s\";\n", n, now);
        fputs("document.getElementById('source').textContent='From '+SOURCE;\nconst RUNS=[\n", f);
        for (int i = 0; i < n; i++) {
            char *js = fm_track_run_json(&runs[i]);
            /* {"id":...} -> {"images":[...],"id":...} */
            fprintf(f, "{\"images\":%s,", lists[i]);
            put_script_safe(f, js + 1);
            fputs(i + 1 < n ? ",\n" : "\n", f);
            free(js);
        }
        fputs("];\n</script>\n", f);
        fputs(page_script, f);
        st = fm_atomic_commit(f, tmp, path);
    }
    for (int i = 0; i < n; i++) free(lists[i]);
    free(lists);
    return st;
}
