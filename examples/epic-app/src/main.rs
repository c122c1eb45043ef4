//! epic-app: parses N generated arithmetic expressions into syntax trees and evaluates them, the
//! "AST parsing" workload of plans/fleet-suite's command multiplier. `baseline.py` does the same
//! work in pure Python: both print the same checksum and `ops=N`, so the suite can check they
//! agree and time one against the other.
//!
//!     epic-app parse N [SEED]     parse and evaluate N expressions
//!     epic-app --version

use std::process::ExitCode;

/// A small deterministic generator (the same in baseline.py).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) & ((1 << 63) - 1);
        self.0 >> 33
    }
}

/// An expression of `depth` levels: numbers, + - *, parentheses.
fn generate(rng: &mut Lcg, depth: u32, out: &mut String) {
    if depth == 0 || rng.next() % 4 == 0 {
        let n = (rng.next() % 100) as u8;
        if n >= 10 {
            out.push(char::from(b'0' + n / 10));
        }
        out.push(char::from(b'0' + n % 10));
        return;
    }
    let paren = rng.next() % 3 == 0;
    if paren {
        out.push('(');
    }
    generate(rng, depth - 1, out);
    out.push_str([" + ", " - ", " * "][(rng.next() % 3) as usize]);
    generate(rng, depth - 1, out);
    if paren {
        out.push(')');
    }
}

/// A syntax tree node; children are indices into the parser's arena (one allocation for all).
#[derive(Debug, Clone, Copy)]
enum Ast {
    Num(i64),
    Bin(u32, u8, u32),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    arena: &'a mut Vec<Ast>,
}

impl Parser<'_> {
    fn skip(&mut self) {
        while self.i < self.s.len() && self.s[self.i] == b' ' {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip();
        self.s.get(self.i).copied()
    }

    fn node(&mut self, a: Ast) -> u32 {
        self.arena.push(a);
        (self.arena.len() - 1) as u32
    }

    // expr := term (('+' | '-') term)*
    fn expr(&mut self) -> Result<u32, String> {
        let mut left = self.term()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.i += 1;
            let right = self.term()?;
            left = self.node(Ast::Bin(left, op, right));
        }
        Ok(left)
    }

    // term := atom ('*' atom)*
    fn term(&mut self) -> Result<u32, String> {
        let mut left = self.atom()?;
        while self.peek() == Some(b'*') {
            self.i += 1;
            let right = self.atom()?;
            left = self.node(Ast::Bin(left, b'*', right));
        }
        Ok(left)
    }

    fn atom(&mut self) -> Result<u32, String> {
        match self.peek() {
            Some(b'(') => {
                self.i += 1;
                let e = self.expr()?;
                if self.peek() != Some(b')') {
                    return Err(format!("expected `)` at {}", self.i));
                }
                self.i += 1;
                Ok(e)
            }
            Some(c) if c.is_ascii_digit() => {
                let mut n: i64 = 0;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    n = n.checked_mul(10).and_then(|n| n.checked_add(i64::from(self.s[self.i] - b'0'))).ok_or("number too large")?;
                    self.i += 1;
                }
                Ok(self.node(Ast::Num(n)))
            }
            other => Err(format!("unexpected {:?} at {}", other.map(char::from), self.i)),
        }
    }
}

fn eval(arena: &[Ast], at: u32) -> i64 {
    match arena[at as usize] {
        Ast::Num(n) => n,
        Ast::Bin(l, op, r) => {
            let (l, r) = (eval(arena, l), eval(arena, r));
            match op {
                b'+' => l.wrapping_add(r),
                b'-' => l.wrapping_sub(r),
                _ => l.wrapping_mul(r),
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") => {
            println!("epic-app {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("parse") => {
            let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
            let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
            let mut rng = Lcg(seed);
            let mut checksum: i64 = 0;
            let mut text = String::new();
            let mut arena = Vec::new();
            for _ in 0..n {
                text.clear();
                arena.clear();
                generate(&mut rng, 6, &mut text);
                let mut p = Parser { s: text.as_bytes(), i: 0, arena: &mut arena };
                match p.expr() {
                    Ok(root) => checksum = checksum.wrapping_mul(31).wrapping_add(eval(&arena, root)) % 1_000_000_007,
                    Err(e) => {
                        eprintln!("epic-app: cannot parse {text:?}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            println!("checksum={checksum}");
            println!("ops={n}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: epic-app parse N [SEED] | --version");
            ExitCode::from(2)
        }
    }
}
