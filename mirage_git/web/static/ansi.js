// ANSI SGR colours → HTML. The state (colour, bold, ...) carries over from line to line, as in a
// terminal. Other escape sequences (cursor moves, OSC titles) are dropped; a carriage return keeps
// only what was written after it, which is how progress bars end up on a terminal.
(function (root) {
  "use strict";
  const ESC = /\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;
  const HTML = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" };

  function escape(text) { return text.replace(/[&<>"]/g, function (c) { return HTML[c]; }); }

  function newState() { return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false }; }

  function color256(n) {
    if (n < 16) return null;
    if (n >= 232) { const v = 8 + (n - 232) * 10; return "rgb(" + v + "," + v + "," + v + ")"; }
    n -= 16;
    const c = [Math.floor(n / 36), Math.floor(n / 6) % 6, n % 6].map(function (x) { return x ? 55 + x * 40 : 0; });
    return "rgb(" + c.join(",") + ")";
  }

  function extended(codes, i, state, key) {
    // 38;5;n / 38;2;r;g;b (and 48 for the background); returns how many codes were used.
    if (codes[i + 1] === 5 && codes.length > i + 2) {
      const n = codes[i + 2];
      state[key] = n < 16 ? { cls: n } : { css: color256(n) };
      return 2;
    }
    if (codes[i + 1] === 2 && codes.length > i + 4) {
      state[key] = { css: "rgb(" + codes[i + 2] + "," + codes[i + 3] + "," + codes[i + 4] + ")" };
      return 4;
    }
    return 0;
  }

  function apply(params, state) {
    const codes = params === "" ? [0] : params.split(";").map(function (x) { return parseInt(x || "0", 10); });
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) Object.assign(state, newState());
      else if (c === 1) state.bold = true;
      else if (c === 2) state.dim = true;
      else if (c === 3) state.italic = true;
      else if (c === 4) state.underline = true;
      else if (c === 22) { state.bold = false; state.dim = false; }
      else if (c === 23) state.italic = false;
      else if (c === 24) state.underline = false;
      else if (c >= 30 && c <= 37) state.fg = { cls: c - 30 };
      else if (c >= 90 && c <= 97) state.fg = { cls: c - 90 + 8 };
      else if (c === 39) state.fg = null;
      else if (c >= 40 && c <= 47) state.bg = { cls: c - 40 };
      else if (c >= 100 && c <= 107) state.bg = { cls: c - 100 + 8 };
      else if (c === 49) state.bg = null;
      else if (c === 38) i += extended(codes, i, state, "fg");
      else if (c === 48) i += extended(codes, i, state, "bg");
    }
  }

  function open(state) {
    const cls = [], css = [];
    if (state.fg) { if (state.fg.css) css.push("color:" + state.fg.css); else cls.push("fg" + state.fg.cls); }
    if (state.bg) { if (state.bg.css) css.push("background:" + state.bg.css); else cls.push("bg" + state.bg.cls); }
    if (state.bold) cls.push("b");
    if (state.dim) cls.push("dim");
    if (state.italic) cls.push("i");
    if (state.underline) cls.push("u");
    if (!cls.length && !css.length) return "";
    return '<span class="' + cls.join(" ") + '"' + (css.length ? ' style="' + css.join(";") + '"' : "") + ">";
  }

  // One line of text → HTML, updating `state`.
  function toHtml(text, state) {
    const cr = text.lastIndexOf("\r", text.length - 2);
    if (cr >= 0) text = text.slice(cr + 1);
    if (text.indexOf("\x1b") < 0) {
      const o = open(state);
      return o ? o + escape(text) + "</span>" : escape(text);
    }
    let out = "", last = 0, m;
    let span = open(state);
    out += span;
    ESC.lastIndex = 0;
    while ((m = ESC.exec(text)) !== null) {
      out += escape(text.slice(last, m.index));
      last = ESC.lastIndex;
      if (m[2] === "m") {
        if (span) out += "</span>";
        apply(m[1], state);
        span = open(state);
        out += span;
      }
    }
    out += escape(text.slice(last));
    if (span) out += "</span>";
    return out;
  }

  root.Ansi = { toHtml: toHtml, newState: newState, escape: escape };
})(window);
