"""The baseline of plans/fleet-suite's command multiplier: the same work as epic-app's
`parse N [SEED]` (generate N arithmetic expressions, parse each into a syntax tree, evaluate
it) in pure Python, printing the same checksum and `ops=N`."""
import sys

MASK = (1 << 63) - 1


class Lcg:
    def __init__(self, seed):
        self.s = seed

    def next(self):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF & MASK
        return self.s >> 33


def generate(rng, depth, out):
    if depth == 0 or rng.next() % 4 == 0:
        out.append(str(rng.next() % 100))
        return
    paren = rng.next() % 3 == 0
    if paren:
        out.append("(")
    generate(rng, depth - 1, out)
    out.append([" + ", " - ", " * "][rng.next() % 3])
    generate(rng, depth - 1, out)
    if paren:
        out.append(")")


class Parser:
    def __init__(self, s):
        self.s, self.i = s, 0

    def peek(self):
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1
        return self.s[self.i] if self.i < len(self.s) else None

    def expr(self):
        left = self.term()
        while self.peek() in ("+", "-"):
            op = self.s[self.i]
            self.i += 1
            left = (left, op, self.term())
        return left

    def term(self):
        left = self.atom()
        while self.peek() == "*":
            self.i += 1
            left = (left, "*", self.atom())
        return left

    def atom(self):
        c = self.peek()
        if c == "(":
            self.i += 1
            e = self.expr()
            if self.peek() != ")":
                raise ValueError("expected ) at %d" % self.i)
            self.i += 1
            return e
        if c is not None and c.isdigit():
            start = self.i
            while self.i < len(self.s) and self.s[self.i].isdigit():
                self.i += 1
            return int(self.s[start:self.i])
        raise ValueError("unexpected %r at %d" % (c, self.i))


def wrap(x):
    x &= 0xFFFFFFFFFFFFFFFF
    return x - (1 << 64) if x >= 1 << 63 else x


def ev(a):
    if isinstance(a, int):
        return a
    left, op, right = a
    l, r = ev(left), ev(right)
    return wrap(l + r) if op == "+" else wrap(l - r) if op == "-" else wrap(l * r)


def rust_rem(a, m):
    # Rust's % truncates toward zero.
    r = abs(a) % m
    return -r if a < 0 else r


def main():
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    rng, checksum = Lcg(seed), 0
    for _ in range(n):
        out = []
        generate(rng, 6, out)
        checksum = rust_rem(wrap(wrap(checksum * 31) + ev(Parser("".join(out)).expr())), 1_000_000_007)
    print("checksum=%d" % checksum)
    print("ops=%d" % n)


if __name__ == "__main__":
    main()
