// vephys results browser: keyboard navigation, unit selection for comparison, and live
// progress from the server-sent event stream. Everything works without it; it only adds.
(() => {
  'use strict';
  const $ = (s, root = document) => root.querySelector(s);
  const $$ = (s, root = document) => Array.from(root.querySelectorAll(s));

  // --- help -------------------------------------------------------------------------------
  const help = $('#help');
  const toggleHelp = () => {
    if (!help) return;
    if (help.open) help.close(); else help.showModal();
  };
  $$('[data-help]').forEach((b) => b.addEventListener('click', toggleHelp));

  // --- login over plain http on a remote host cannot keep a Secure cookie -----------------
  const insecure = $('#insecure');
  const local = ['localhost', '127.0.0.1', '[::1]'].includes(location.hostname);
  if (insecure && location.protocol === 'http:' && !local) insecure.hidden = false;

  // --- the layer page: changing the order applies it -------------------------------------
  const controls = $('form.controls');
  if (controls) {
    $$('select', controls).forEach((s) => s.addEventListener('change', () => controls.submit()));
  }

  // --- selection for comparison -----------------------------------------------------------
  const compare = $('#compare');
  const mark = (box) => {
    const cell = box.closest('.cell');
    if (cell) cell.classList.toggle('picked', box.checked);
  };
  $$('#grid .pick input').forEach((box) => {
    mark(box);
    box.addEventListener('change', () => mark(box));
  });
  if (compare) {
    compare.addEventListener('submit', (e) => {
      if (!$$('input[name="f"]:checked', compare).length) {
        e.preventDefault();
        const first = $('#grid a.unit');
        if (first) first.focus();
      }
    });
  }

  // --- keyboard ---------------------------------------------------------------------------
  const units = () => $$('#grid a.unit, #units a.unit');
  const unitPage = !!$('article.unit');

  const move = (key) => {
    const list = units();
    if (!list.length) return false;
    let i = list.indexOf(document.activeElement);
    if (i < 0) { list[0].focus(); return true; }
    const inGrid = !!document.activeElement.closest('#grid');
    const top = list[0].getBoundingClientRect().top;
    let columns = 1;
    if (inGrid) {
      columns = list.filter((a) => Math.abs(a.getBoundingClientRect().top - top) < 4).length || 1;
    }
    const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns, ArrowDown: columns }[key];
    if (!inGrid && (key === 'ArrowLeft' || key === 'ArrowRight')) return false;
    i = Math.max(0, Math.min(list.length - 1, i + step));
    list[i].focus();
    list[i].scrollIntoView({ block: 'nearest' });
    return true;
  };

  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t instanceof Element && t.closest('input, select, textarea, button, dialog')) {
      if (e.key === 'Escape' && t.closest('input, select, textarea')) t.blur();
      return;
    }
    if (e.key === '?') { toggleHelp(); e.preventDefault(); return; }
    if (e.key === '/') {
      const q = $('#q');
      if (q) { q.focus(); q.select(); e.preventDefault(); }
      return;
    }
    if (e.key.startsWith('Arrow')) {
      if (unitPage) {
        const rel = { ArrowLeft: 'prev', ArrowRight: 'next' }[e.key];
        const a = rel && $(`.prevnext a[rel="${rel}"]`);
        if (a) { a.click(); e.preventDefault(); }
        return;
      }
      if (move(e.key)) e.preventDefault();
      return;
    }
    if (e.key === 'x') {
      const cell = document.activeElement && document.activeElement.closest('.cell');
      const box = cell && $('.pick input', cell);
      if (box) { box.checked = !box.checked; mark(box); e.preventDefault(); }
      return;
    }
    if (e.key === 'c' && compare) {
      if ($$('input[name="f"]:checked', compare).length) compare.requestSubmit();
      e.preventDefault();
      return;
    }
    const target = $$('[data-key]').find((el) => el.dataset.key === e.key);
    if (target) { target.click(); e.preventDefault(); }
  });

  // --- live progress ----------------------------------------------------------------------
  const live = $('#live');
  if (live && live.dataset.events && window.EventSource) {
    const cells = new Map($$('[data-group]').map((td) => [td.dataset.group, td]));
    const reloadNote = () => { const n = $('#new-campaign'); if (n) n.hidden = false; };
    const update = (campaigns) => {
      for (const c of campaigns) {
        const root = $$('[data-campaign]').find((el) => el.dataset.campaign === String(c.id));
        if (!root) { reloadNote(); continue; }
        const state = $('[data-f="state"]', root);
        if (state && state.textContent !== c.state) {
          state.textContent = c.state;
          state.className = `state ${c.state}`;
        }
        const totals = $('[data-f="totals"]', root);
        if (totals) {
          totals.textContent = `${c.totals.done} of ${c.totals.total} jobs done` +
            (c.totals.failed ? `, ${c.totals.failed} failed` : '');
        }
        for (const g of c.groups) {
          const td = cells.get(`${c.id}|${g.layer}|${g.probe}`);
          if (!td) { reloadNote(); continue; }
          const bar = $('progress', td);
          bar.max = g.counts.total;
          bar.value = g.counts.done;
          $('[data-f="done"]', td).textContent = `${g.counts.done}/${g.counts.total}`;
          $('[data-f="failed"]', td).textContent = g.counts.failed ? ` ${g.counts.failed} failed` : '';
        }
      }
    };
    const source = new EventSource(live.dataset.events);
    source.addEventListener('campaigns', (ev) => {
      live.classList.add('on');
      live.title = `updated ${new Date().toLocaleTimeString()}`;
      update(JSON.parse(ev.data));
    });
    source.addEventListener('error', () => live.classList.remove('on'));
    window.addEventListener('pagehide', () => source.close());
  }
})();
