// A small terminal emulator for the console's shell view: enough of ECMA-48 / VT100 for a
// shell, its line editor and full-screen programs (cursor movement, erasing, insert and delete,
// scroll regions, the alternate screen, wrapping). Colours and attributes are parsed and
// ignored. Output is UTF-8 bytes, decoded across chunk boundaries.
"use strict";

class Terminal {
  constructor(el, cols, rows, reply) {
    this.el = el;
    this.reply = reply || (() => {});
    this.decoder = new TextDecoder("utf-8");
    this.resize(cols, rows);
    this.state = "ground";
    this.params = "";
    this.dirty = false;
  }

  blankLine() { return new Array(this.cols).fill(" "); }

  resize(cols, rows) {
    const old = this.lines;
    this.cols = cols;
    this.rows = rows;
    this.lines = [];
    for (let y = 0; y < rows; y++) {
      const line = this.blankLine();
      if (old && old[y]) for (let x = 0; x < Math.min(cols, old[y].length); x++) line[x] = old[y][x];
      this.lines.push(line);
    }
    this.other = null;
    this.x = Math.min(this.x || 0, cols - 1);
    this.y = Math.min(this.y || 0, rows - 1);
    this.top = 0;
    this.bottom = rows - 1;
    this.wrap = false;
    this.saved = { x: 0, y: 0 };
    this.cursorVisible = true;
    this.dirty = true;
  }

  // The screen as text, one line per row, trailing blanks kept (a fixed grid).
  text() { return this.lines.map((l) => l.join("")).join("\n"); }

  write(bytes) {
    const s = this.decoder.decode(bytes, { stream: true });
    for (const ch of s) this.feed(ch);
    this.dirty = true;
  }

  feed(ch) {
    const c = ch.codePointAt(0);
    switch (this.state) {
      case "ground":
        if (c === 0x1b) { this.state = "esc"; return; }
        if (c < 0x20 || c === 0x7f) return this.control(c);
        return this.print(ch);
      case "esc": return this.escape(ch);
      case "charset": this.state = "ground"; return;
      case "csi":
        if (c >= 0x30 && c <= 0x3f) { this.params += ch; return; }
        if (c >= 0x20 && c <= 0x2f) return; // intermediates: ignored
        if (c >= 0x40 && c <= 0x7e) { this.state = "ground"; return this.csi(ch); }
        if (c === 0x1b) { this.state = "esc"; return; }
        if (c < 0x20) return this.control(c);
        this.state = "ground";
        return;
      case "osc":
        if (c === 0x07) { this.state = "ground"; return; }
        if (c === 0x1b) { this.state = "osc-esc"; return; }
        return;
      case "osc-esc": this.state = c === 0x5c ? "ground" : "osc"; return;
    }
  }

  control(c) {
    switch (c) {
      case 0x0d: this.x = 0; this.wrap = false; break;
      case 0x0a: case 0x0b: case 0x0c: this.lineFeed(); break;
      case 0x08: if (this.x > 0) this.x--; this.wrap = false; break;
      case 0x09: this.x = Math.min(this.cols - 1, (Math.floor(this.x / 8) + 1) * 8); break;
      default: break; // BEL and the rest
    }
  }

  print(ch) {
    if (this.wrap) { this.x = 0; this.lineFeed(); this.wrap = false; }
    this.lines[this.y][this.x] = ch;
    if (this.x === this.cols - 1) this.wrap = true;
    else this.x++;
  }

  lineFeed() {
    if (this.y === this.bottom) this.scrollUp(1);
    else if (this.y < this.rows - 1) this.y++;
  }

  scrollUp(n) {
    for (let i = 0; i < n; i++) {
      this.lines.splice(this.top, 1);
      this.lines.splice(this.bottom, 0, this.blankLine());
    }
  }

  scrollDown(n) {
    for (let i = 0; i < n; i++) {
      this.lines.splice(this.bottom, 1);
      this.lines.splice(this.top, 0, this.blankLine());
    }
  }

  escape(ch) {
    this.state = "ground";
    switch (ch) {
      case "[": this.state = "csi"; this.params = ""; break;
      case "]": this.state = "osc"; break;
      case "(": case ")": case "*": case "+": this.state = "charset"; break;
      case "7": this.saved = { x: this.x, y: this.y }; break;
      case "8": this.x = this.saved.x; this.y = this.saved.y; this.wrap = false; break;
      case "D": this.lineFeed(); break;
      case "E": this.x = 0; this.lineFeed(); break;
      case "M":
        if (this.y === this.top) this.scrollDown(1);
        else if (this.y > 0) this.y--;
        break;
      case "c": this.resize(this.cols, this.rows); this.x = 0; this.y = 0; this.clear(0, 0, this.cols, this.rows); break;
      default: break; // keypad modes and the rest
    }
  }

  clear(x0, y0, x1, y1) {
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) this.lines[y][x] = " ";
  }

  alternate(on) {
    if (on === (this.other !== null)) return;
    if (on) {
      this.other = { lines: this.lines, x: this.x, y: this.y };
      this.lines = [];
      for (let y = 0; y < this.rows; y++) this.lines.push(this.blankLine());
    } else {
      ({ lines: this.lines, x: this.x, y: this.y } = this.other);
      this.other = null;
    }
  }

  csi(final) {
    const priv = this.params.startsWith("?");
    const ps = (priv ? this.params.slice(1) : this.params).split(";").map((p) => parseInt(p, 10));
    const p = (i, d) => (Number.isFinite(ps[i]) && ps[i] > 0 ? ps[i] : d);
    const clampY = (y) => Math.max(0, Math.min(this.rows - 1, y));
    const clampX = (x) => Math.max(0, Math.min(this.cols - 1, x));
    this.wrap = false;
    const line = this.lines[this.y];
    switch (final) {
      case "A": this.y = Math.max(this.y >= this.top ? this.top : 0, this.y - p(0, 1)); break;
      case "B": this.y = Math.min(this.y <= this.bottom ? this.bottom : this.rows - 1, this.y + p(0, 1)); break;
      case "C": this.x = clampX(this.x + p(0, 1)); break;
      case "D": this.x = clampX(this.x - p(0, 1)); break;
      case "E": this.x = 0; this.y = clampY(this.y + p(0, 1)); break;
      case "F": this.x = 0; this.y = clampY(this.y - p(0, 1)); break;
      case "G": case "`": this.x = clampX(p(0, 1) - 1); break;
      case "d": this.y = clampY(p(0, 1) - 1); break;
      case "H": case "f": this.y = clampY(p(0, 1) - 1); this.x = clampX(p(1, 1) - 1); break;
      case "J": {
        const mode = ps[0] || 0;
        if (mode === 0) { this.clear(this.x, this.y, this.cols, this.y + 1); this.clear(0, this.y + 1, this.cols, this.rows); }
        else if (mode === 1) { this.clear(0, 0, this.cols, this.y); this.clear(0, this.y, this.x + 1, this.y + 1); }
        else this.clear(0, 0, this.cols, this.rows);
        break;
      }
      case "K": {
        const mode = ps[0] || 0;
        if (mode === 0) this.clear(this.x, this.y, this.cols, this.y + 1);
        else if (mode === 1) this.clear(0, this.y, this.x + 1, this.y + 1);
        else this.clear(0, this.y, this.cols, this.y + 1);
        break;
      }
      case "X": this.clear(this.x, this.y, Math.min(this.cols, this.x + p(0, 1)), this.y + 1); break;
      case "P": {
        const n = Math.min(p(0, 1), this.cols - this.x);
        line.splice(this.x, n);
        for (let i = 0; i < n; i++) line.push(" ");
        break;
      }
      case "@": {
        const n = Math.min(p(0, 1), this.cols - this.x);
        for (let i = 0; i < n; i++) line.splice(this.x, 0, " ");
        line.length = this.cols;
        break;
      }
      case "L": case "M": {
        if (this.y < this.top || this.y > this.bottom) break;
        const n = Math.min(p(0, 1), this.bottom - this.y + 1);
        for (let i = 0; i < n; i++) {
          if (final === "L") { this.lines.splice(this.bottom, 1); this.lines.splice(this.y, 0, this.blankLine()); }
          else { this.lines.splice(this.y, 1); this.lines.splice(this.bottom, 0, this.blankLine()); }
        }
        this.x = 0;
        break;
      }
      case "S": this.scrollUp(p(0, 1)); break;
      case "T": this.scrollDown(p(0, 1)); break;
      case "r": {
        const top = p(0, 1) - 1, bottom = p(1, this.rows) - 1;
        if (top < bottom && bottom < this.rows) { this.top = top; this.bottom = bottom; this.x = 0; this.y = 0; }
        break;
      }
      case "s": this.saved = { x: this.x, y: this.y }; break;
      case "u": this.x = this.saved.x; this.y = this.saved.y; break;
      case "h": case "l": {
        const on = final === "h";
        if (!priv) break;
        for (const mode of ps) {
          if (mode === 1049 || mode === 1047 || mode === 47) {
            if (mode === 1049 && on) this.saved = { x: this.x, y: this.y };
            this.alternate(on);
            if (mode === 1049 && !on) { this.x = this.saved.x; this.y = this.saved.y; }
          } else if (mode === 25) this.cursorVisible = on;
        }
        break;
      }
      case "n":
        if (ps[0] === 6) this.reply(`\x1b[${this.y + 1};${this.x + 1}R`);
        else if (ps[0] === 5) this.reply("\x1b[0n");
        break;
      case "c": if (!priv) this.reply("\x1b[?1;2c"); break;
      default: break; // SGR (m) and the rest: attributes are not drawn
    }
  }

  // Draws the grid into the element (text nodes, the cursor cell in a span).
  render() {
    if (!this.dirty) return;
    this.dirty = false;
    const rows = this.lines.map((l) => l.join(""));
    if (!this.cursorVisible) { this.el.replaceChildren(document.createTextNode(rows.join("\n"))); return; }
    const before = rows.slice(0, this.y).concat([rows[this.y].slice(0, this.x)]).join("\n");
    const at = rows[this.y][this.x] || " ";
    const after = rows[this.y].slice(this.x + 1) + (this.y + 1 < rows.length ? "\n" + rows.slice(this.y + 1).join("\n") : "");
    const cursor = document.createElement("span");
    cursor.className = "cursor";
    cursor.textContent = at;
    this.el.replaceChildren(document.createTextNode(before), cursor, document.createTextNode(after));
  }
}

// The bytes a key press sends to a terminal (xterm conventions), or null to let it be.
function keyBytes(e) {
  const named = {
    Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b",
    ArrowUp: "\x1b[A", ArrowDown: "\x1b[B", ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D",
    Home: "\x1b[H", End: "\x1b[F", Delete: "\x1b[3~", Insert: "\x1b[2~",
    PageUp: "\x1b[5~", PageDown: "\x1b[6~",
  };
  if (e.metaKey) return null;
  if (named[e.key]) return named[e.key];
  if (e.key.length !== 1) return null;
  if (e.ctrlKey) {
    const c = e.key.toUpperCase().charCodeAt(0);
    if (c >= 0x40 && c <= 0x5f) return String.fromCharCode(c - 0x40);
    if (e.key === " ") return "\x00";
    return null;
  }
  return e.altKey ? "\x1b" + e.key : e.key;
}

window.Terminal = Terminal;
window.keyBytes = keyBytes;
