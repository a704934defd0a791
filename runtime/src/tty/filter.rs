//! What of the agent's terminal output reaches the user's terminal. Input: the bytes the
//! agent writes to its pty, in chunks split anywhere. Output: the same bytes, except (with
//! [`Filter::Safe`]) the sequences that act on the user's terminal or machine beyond drawing
//! text, and a mark on lines that could pass for `aegis-exec`'s own; plus, at the end, the
//! sequences that undo the terminal modes the agent left set.
//!
//! Dropped with `Safe`: every OSC string (`ESC ]` … `BEL`/`ST`: clipboard writes (OSC 52),
//! window and icon titles, notifications, palette changes, hyperlinks), every DCS, APC, PM
//! and SOS string (`ESC P`/`_`/`^`/`X` … `ST`: terminal-specific passthroughs and key
//! redefinitions), full reset (`ESC c`), window operations and reports (`CSI … t`), and the
//! 8-bit C1 controls encoded as UTF-8 (U+0080–U+009F), which some terminals obey. Kept:
//! text, colours and every other CSI (cursor movement, erasing, modes, queries whose answers
//! go back to the agent's own input), so full-screen programs work.
//!
//! Marked with `Safe`: a line whose visible text starts, after blanks, with `aegis-exec`
//! (the prefix of the supervisor's own messages, such as the closing "agent exited" line) is
//! shown as `[agent] aegis-exec…`, so the agent cannot print a fake end of the run and keep
//! going. A line starts after a newline or carriage return, or after a cursor move to a
//! column or position (`CSI … G/H/f/d`).
//!
//! Invariants: the parser state survives chunk boundaries; memory is bounded (a sequence is
//! held at most `MAX_HELD` bytes, longer ones are dropped whole with `Safe` and passed on
//! with `Off`); the modes undone at the end are exactly the DEC private modes the agent set
//! and did not reset, the keypad mode and the character set.

/// Whether dangerous sequences are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    /// Drop what the module docs list, mark lines that look like aegis-exec's.
    #[default]
    Safe,
    /// Pass everything through (the modes are still undone at the end).
    Off,
}

const MAX_HELD: usize = 4096;
const PREFIX: &[u8] = b"aegis-exec";
const MARK: &[u8] = b"[agent] ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ground,
    /// After ESC.
    Esc,
    /// After ESC and intermediates (0x20–0x2F), waiting for the final byte.
    EscInter,
    /// Inside CSI (parameters and intermediates), waiting for the final byte.
    Csi,
    /// Inside an OSC/DCS/APC/PM/SOS string, up to ST (or BEL for OSC).
    Str { osc: bool },
    /// Inside such a string, after ESC (ST is `ESC \`).
    StrEsc { osc: bool },
    /// Inside such a string, after 0xC2 (the 8-bit ST as UTF-8 is C2 9C).
    StrC2 { osc: bool },
    /// After 0xC2 (a UTF-8 lead byte that may start a C1 control).
    C2,
}

pub struct OutputFilter {
    filter: Filter,
    state: State,
    /// The sequence being parsed (ESC …), or a line start being checked for the prefix.
    held: Vec<u8>,
    /// Checking the visible start of a line: how many prefix bytes matched so far.
    line_check: Option<usize>,
    /// Bytes held while checking the start of a line (text and sequences, in order).
    line_held: Vec<u8>,
    /// Where in `line_held` the line's first visible byte is (the mark goes there).
    first_visible: Option<usize>,
    /// The sequence is a C1 CSI (8-bit): dropped with `Safe`.
    c1: bool,
    /// DEC private modes set (`CSI ? n h`) and not reset, in order.
    modes: Vec<u32>,
    keypad: bool,
    charset: bool,
}

impl OutputFilter {
    pub fn new(filter: Filter) -> OutputFilter {
        OutputFilter {
            filter,
            state: State::Ground,
            held: Vec::new(),
            line_check: Some(0),
            line_held: Vec::new(),
            first_visible: None,
            c1: false,
            modes: Vec::new(),
            keypad: false,
            charset: false,
        }
    }

    /// Filters one chunk, appending what may be shown to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.byte(b, out);
        }
        // An undecided line start waits for more (bounded; see `stalled` for a pause).
        if self.line_held.len() > MAX_HELD {
            self.release_line(out, false);
        }
    }

    /// Whether the start of a line is held back, waiting to see if it is `aegis-exec`.
    pub fn holding(&self) -> bool {
        !self.line_held.is_empty()
    }

    /// The output stalled while a line start was held (a prompt, or an agent writing the
    /// prefix in pieces): shows it now, marked if it is a beginning of the prefix, so
    /// splitting `aegis-exec` over several writes does not get around the mark.
    pub fn stalled(&mut self, out: &mut Vec<u8>) {
        match self.line_check {
            Some(m) if m > 0 => self.release_line(out, true),
            Some(_) => {
                // Only blanks and sequences so far: show them, keep watching the line.
                out.append(&mut self.line_held);
                self.first_visible = None;
            }
            None => {}
        }
    }

    /// What to write after the agent's last output: undo the modes it left set, reset colours.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.release_line(out, false);
        if self.filter == Filter::Off && !self.held.is_empty() {
            out.append(&mut self.held);
        }
        self.held.clear();
        self.state = State::Ground;
        out.extend_from_slice(b"\x1b[0m");
        for m in self.modes.drain(..).rev() {
            out.extend_from_slice(format!("\x1b[?{m}l").as_bytes());
            if m == 25 {
                // Hidden cursor: `l` would hide it; the reset is `h`.
                out.truncate(out.len() - 1);
                out.push(b'h');
            }
        }
        if self.keypad {
            out.extend_from_slice(b"\x1b>");
            self.keypad = false;
        }
        if self.charset {
            out.extend_from_slice(b"\x1b(B");
            self.charset = false;
        }
    }

    fn safe(&self) -> bool {
        self.filter == Filter::Safe
    }

    /// Emits bytes of the agent's output, through the line-start check.
    fn emit(&mut self, bytes: &[u8], visible: bool, out: &mut Vec<u8>) {
        let Some(matched) = self.line_check else {
            out.extend_from_slice(bytes);
            return;
        };
        if !self.safe() {
            self.line_check = None;
            out.extend_from_slice(bytes);
            return;
        }
        if !visible {
            self.line_held.extend_from_slice(bytes);
            return;
        }
        let mut matched = matched;
        if self.first_visible.is_none() {
            self.first_visible = Some(self.line_held.len());
        }
        for (i, &b) in bytes.iter().enumerate() {
            if matched == 0 && (b == b' ' || b == b'\t') {
                self.line_held.push(b);
                continue;
            }
            if PREFIX.get(matched) == Some(&b) {
                matched += 1;
                self.line_held.push(b);
                if matched == PREFIX.len() {
                    self.release_line(out, true);
                    out.extend_from_slice(bytes.get(i + 1..).unwrap_or_default());
                    return;
                }
                continue;
            }
            // Not the prefix: show what was held, then the rest as is.
            self.release_line(out, false);
            out.extend_from_slice(bytes.get(i..).unwrap_or_default());
            return;
        }
        self.line_check = Some(matched);
    }

    fn release_line(&mut self, out: &mut Vec<u8>, mark: bool) {
        if mark {
            // The mark goes before the held text, after any sequences that preceded it.
            let first_text = self.first_visible.unwrap_or(0);
            let (seqs, text) = self.line_held.split_at(first_text.min(self.line_held.len()));
            out.extend_from_slice(seqs);
            out.extend_from_slice(MARK);
            out.extend_from_slice(text);
        } else {
            out.extend_from_slice(&self.line_held);
        }
        self.line_held.clear();
        self.first_visible = None;
        self.line_check = None;
    }

    fn line_start(&mut self, out: &mut Vec<u8>) {
        if self.line_check.is_some_and(|m| m > 0) || !self.line_held.is_empty() {
            self.release_line(out, false);
        }
        self.line_check = Some(0);
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Ground => match b {
                0x1b => {
                    self.held.clear();
                    self.held.push(b);
                    self.state = State::Esc;
                }
                0xc2 => self.state = State::C2,
                b'\n' | b'\r' => {
                    // The line ends: what was held is plain text.
                    self.release_line(out, false);
                    out.push(b);
                    self.line_start(out);
                }
                _ => self.emit(&[b], !b.is_ascii_control(), out),
            },
            State::C2 => {
                self.state = State::Ground;
                if (0x80..=0x9f).contains(&b) && self.safe() {
                    // A C1 control as UTF-8: a string introducer starts a dropped string,
                    // CSI a dropped sequence; the rest are dropped alone.
                    match b {
                        0x90 | 0x98 | 0x9e | 0x9f => self.state = State::Str { osc: false },
                        0x9d => self.state = State::Str { osc: true },
                        0x9b => {
                            self.held.clear();
                            self.c1 = true;
                            self.state = State::Csi;
                        }
                        _ => {}
                    }
                } else {
                    self.emit(&[0xc2, b], true, out);
                }
            }
            State::Esc => {
                self.held.push(b);
                match b {
                    b'[' => {
                        self.c1 = false;
                        self.state = State::Csi;
                    }
                    b']' => self.start_string(true, out),
                    b'P' | b'_' | b'^' | b'X' => self.start_string(false, out),
                    0x20..=0x2f => self.state = State::EscInter,
                    b'c' if self.safe() => {
                        self.held.clear();
                        self.state = State::Ground;
                    }
                    _ => {
                        match b {
                            b'=' => self.keypad = true,
                            b'>' => self.keypad = false,
                            _ => {}
                        }
                        self.flush_held(out);
                    }
                }
            }
            State::EscInter => {
                self.held.push(b);
                if !(0x20..=0x2f).contains(&b) {
                    if self.held.get(1) == Some(&b'(') {
                        self.charset = b != b'B';
                    }
                    self.flush_held(out);
                } else if self.held.len() > MAX_HELD {
                    self.overflow(out);
                }
            }
            State::Csi => {
                self.held.push(b);
                if (0x40..=0x7e).contains(&b) {
                    self.end_csi(b, out);
                } else if self.held.len() > MAX_HELD {
                    self.overflow(out);
                }
            }
            State::Str { osc } => match b {
                0x07 if osc => self.end_string(b"\x07", out),
                0x1b => self.state = State::StrEsc { osc },
                0xc2 => self.state = State::StrC2 { osc },
                _ => self.string_byte(b, out),
            },
            State::StrC2 { osc } => {
                if b == 0x9c {
                    self.end_string(b"\xc2\x9c", out);
                } else {
                    self.string_byte(0xc2, out);
                    self.state = State::Str { osc };
                    self.byte(b, out);
                }
            }
            State::StrEsc { osc } => {
                if b == b'\\' {
                    self.end_string(b"\x1b\\", out);
                } else {
                    // Not ST: the string goes on (the ESC was part of it).
                    self.string_byte(0x1b, out);
                    self.state = State::Str { osc };
                    self.string_byte(b, out);
                }
            }
        }
    }

    fn start_string(&mut self, osc: bool, out: &mut Vec<u8>) {
        self.state = State::Str { osc };
        if !self.safe() {
            // Passed on as it comes (nothing is held).
            let held = std::mem::take(&mut self.held);
            self.emit(&held, false, out);
        } else {
            self.held.clear();
        }
    }

    fn string_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if !self.safe() {
            self.emit(&[b], false, out);
        }
    }

    /// The string ended with `terminator` (BEL, or ST as `ESC \`).
    fn end_string(&mut self, terminator: &[u8], out: &mut Vec<u8>) {
        self.state = State::Ground;
        if !self.safe() {
            self.emit(terminator, false, out);
        }
    }

    fn end_csi(&mut self, fin: u8, out: &mut Vec<u8>) {
        let params = self.held.get(2..self.held.len().saturating_sub(1)).unwrap_or_default().to_vec();
        if let Some(rest) = params.strip_prefix(b"?")
            && (fin == b'h' || fin == b'l')
        {
            for n in rest.split(|c| *c == b';').filter_map(|p| std::str::from_utf8(p).ok()?.parse::<u32>().ok()) {
                // Cursor visibility is tracked inverted: `?25l` hides it.
                let set = (fin == b'h') != (n == 25);
                self.modes.retain(|m| *m != n);
                if set {
                    self.modes.push(n);
                }
            }
        }
        if self.safe() && (self.c1 || fin == b't') {
            self.held.clear();
            self.state = State::Ground;
            return;
        }
        let moves_to_column = matches!(fin, b'G' | b'H' | b'f' | b'd');
        self.flush_held(out);
        if moves_to_column {
            self.line_start(out);
        }
    }

    fn flush_held(&mut self, out: &mut Vec<u8>) {
        self.state = State::Ground;
        let held = std::mem::take(&mut self.held);
        self.emit(&held, false, out);
    }

    fn overflow(&mut self, out: &mut Vec<u8>) {
        if self.safe() {
            self.held.clear();
            self.state = State::Ground;
        } else {
            self.flush_held(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(filter: Filter, chunks: &[&[u8]]) -> Vec<u8> {
        let mut f = OutputFilter::new(filter);
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, &mut out);
        }
        out
    }

    fn whole_and_bytewise(filter: Filter, input: &[u8]) -> Vec<u8> {
        let whole = run(filter, &[input]);
        let single: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(filter, &single), whole, "chunking must not matter for {input:?}");
        whole
    }

    #[test]
    fn text_colours_and_cursor_movement_pass() {
        let s = b"hello \x1b[31mred\x1b[0m\r\n\x1b[2J\x1b[10;5Hmoved\x1b[?1049h\x1b[K done\r\n";
        assert_eq!(whole_and_bytewise(Filter::Safe, s), s.to_vec());
    }

    #[test]
    fn osc_dcs_apc_titles_clipboard_and_window_ops_are_dropped() {
        let s = b"a\x1b]52;c;ZWNobyBwd25lZA==\x07b\x1b]0;evil title\x1b\\c\x1bPtmux;\x1b\x1b]52;c;eA==\x07\x1b\\d\x1b_apc\x1b\\e\x1b[21tf\x1bcg\xc2\x9d8;;http://x\xc2\x9ch";
        assert_eq!(whole_and_bytewise(Filter::Safe, s), b"abcdefgh".to_vec());
        assert_eq!(whole_and_bytewise(Filter::Off, b"a\x1b]52;c;eA==\x07b"), b"a\x1b]52;c;eA==\x07b".to_vec());
    }

    #[test]
    fn a_line_that_could_pass_for_aegis_exec_is_marked() {
        let s = b"working\n  aegis-exec: agent exited: status 0\r\n\x1b[1Gaegis-exec: x\nnot aegis-exec\n";
        let out = whole_and_bytewise(Filter::Safe, s);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "working\n[agent]   aegis-exec: agent exited: status 0\r\n\x1b[1G[agent] aegis-exec: x\nnot aegis-exec\n"
        );
        // With colours in front of it, too.
        let out = whole_and_bytewise(Filter::Safe, b"\n\x1b[32maegis-exec: ok\n");
        assert_eq!(String::from_utf8_lossy(&out), "\n\x1b[32m[agent] aegis-exec: ok\n");
        // A line that only starts like it is shown as it is, once it is clearly not it.
        assert_eq!(whole_and_bytewise(Filter::Safe, b"aegis-e\n"), b"aegis-e\n".to_vec());
        // The prefix written in pieces, with pauses: marked when the output stalls on it.
        let mut f = OutputFilter::new(Filter::Safe);
        let mut out = Vec::new();
        f.feed(b"ok\naegis", &mut out);
        assert!(f.holding());
        f.stalled(&mut out);
        f.feed(b"-exec: agent exited\n", &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "ok\n[agent] aegis-exec: agent exited\n");
    }

    #[test]
    fn modes_left_set_are_undone_at_the_end() {
        let mut f = OutputFilter::new(Filter::Safe);
        let mut out = Vec::new();
        f.feed(b"\x1b[?1049h\x1b[?25l\x1b[?1000h\x1b[?1000l\x1b=\x1b(0x", &mut out);
        out.clear();
        f.finish(&mut out);
        assert_eq!(String::from_utf8_lossy(&out), "\x1b[0m\x1b[?25h\x1b[?1049l\x1b>\x1b(B");
    }

    #[test]
    fn held_bytes_are_bounded() {
        let mut f = OutputFilter::new(Filter::Safe);
        let mut out = Vec::new();
        let mut long = b"\x1b]52;c;".to_vec();
        long.extend(std::iter::repeat_n(b'A', 1 << 20));
        f.feed(&long, &mut out);
        assert!(out.is_empty() && f.held.len() <= MAX_HELD && f.line_held.len() <= MAX_HELD);
        f.feed(b"\x07ok", &mut out);
        assert_eq!(out, b"ok".to_vec());
    }
}
