//! pi: prints the first N decimal digits of pi (N from the first argument, 1..=10000)
//! using Rabinowitz–Wagon's spigot algorithm. Bad input: a message on stderr, exit 2.

use std::process::ExitCode;

/// Digits of pi ("31415…"), `n` of them.
fn pi_digits(n: usize) -> String {
    let len = n * 10 / 3 + 2;
    let mut a = vec![2u32; len];
    let mut out = String::with_capacity(n + 1);
    let mut nines = 0usize;
    let mut predigit: Option<u32> = None;
    for _ in 0..=n {
        let mut carry = 0u32;
        for i in (0..len).rev() {
            let x = 10 * a[i] + carry * (i as u32 + 1);
            let d = 2 * i as u32 + 1;
            a[i] = x % d;
            carry = x / d;
        }
        a[0] = carry % 10;
        let q = carry / 10;
        match q {
            9 => nines += 1,
            10 => {
                if let Some(p) = predigit {
                    out.push(char::from_digit(p + 1, 10).unwrap_or('0'));
                }
                out.extend(std::iter::repeat_n('0', nines));
                predigit = Some(0);
                nines = 0;
            }
            _ => {
                if let Some(p) = predigit {
                    out.push(char::from_digit(p, 10).unwrap_or('0'));
                }
                predigit = Some(q);
                out.extend(std::iter::repeat_n('9', nines));
                nines = 0;
            }
        }
    }
    if let Some(p) = predigit {
        out.push(char::from_digit(p, 10).unwrap_or('0'));
    }
    out.truncate(n);
    out
}

fn main() -> ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "50".into());
    let n: usize = match arg.parse() {
        Ok(n) if (1..=10_000).contains(&n) => n,
        _ => {
            eprintln!("pi: expected a number of digits between 1 and 10000, got {arg:?}");
            return ExitCode::from(2);
        }
    };
    let digits = pi_digits(n);
    println!("{}.{}", &digits[..1], &digits[1..]);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_digits() {
        assert_eq!(super::pi_digits(20), "31415926535897932384");
    }
}
