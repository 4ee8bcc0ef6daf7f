//! The arguments of `#[sse_controller(...)]` and `#[sse(...)]`, parsed into
//! typed values. Every mistake is collected with its span.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, LitBool, LitStr, Token, Type};

use crate::errors::{Errors, error_with_help};

/// `#[sse_controller("/prefix", state = AppState)]`
pub struct ControllerArgs {
    pub prefix: LitStr,
    pub state: Option<Type>,
}

/// `#[sse("/path", keep_alive = "5s", retry = "3s", batch_window = "5ms", write_stall = "10s", method = "post")]`
pub struct RouteArgs {
    pub path: LitStr,
    pub keep_alive: SwitchableDuration,
    pub batch_window: SwitchableDuration,
    pub write_stall: SwitchableDuration,
    pub retry_ms: Option<u64>,
    pub method: HttpMethod,
}

/// A duration option that also takes `false` (off) and has a runtime default.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SwitchableDuration {
    Default,
    Off,
    EveryMs(u64),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    pub fn name(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }

    /// The method of a plain-route attribute (`#[get]`, `#[post]`, ...).
    pub fn of_attribute(name: &str) -> Option<HttpMethod> {
        match name {
            "get" => Some(HttpMethod::Get),
            "post" => Some(HttpMethod::Post),
            "put" => Some(HttpMethod::Put),
            "patch" => Some(HttpMethod::Patch),
            "delete" => Some(HttpMethod::Delete),
            _ => None,
        }
    }
}

/// `#[get("/path")]` (and `post`, `put`, `patch`, `delete`): a plain route.
pub struct PlainRouteArgs {
    pub path: LitStr,
}

impl PlainRouteArgs {
    pub fn parse(input: ParseStream) -> syn::Result<Self> {
        let path = parse_path(input, "#[get(\"/status\")]")?;
        if !input.is_empty() {
            return Err(error_with_help(
                input.span(),
                "a plain route takes only its path",
                "options such as `keep_alive` belong to #[sse] routes; write #[get(\"/path\")]",
            ));
        }
        Ok(PlainRouteArgs { path })
    }
}

const PATH_HELP: &str = "write the path first, as a string literal";

/// Parses the leading path literal, with a teaching error when it is missing.
fn parse_path(input: ParseStream, example: &str) -> syn::Result<LitStr> {
    if input.is_empty() {
        return Err(error_with_help(
            Span::call_site(),
            "missing route path",
            format!("{PATH_HELP}: {example}"),
        ));
    }
    if input.peek(LitStr) {
        return input.parse();
    }
    Err(error_with_help(
        input.span(),
        "the route path must be a string literal",
        format!(
            "{PATH_HELP}: {example}; paths are checked at compile time, so constants and \
             expressions cannot be used"
        ),
    ))
}

/// Parses `, key = value` pairs after the path, handing each to `option`.
/// Stops at the first token that cannot be a pair; collected errors go to `errors`.
fn parse_options(
    input: ParseStream,
    errors: &mut Errors,
    known: &[&str],
    mut option: impl FnMut(&Ident, ParseStream, &mut Errors) -> syn::Result<()>,
) -> syn::Result<()> {
    let mut seen: Vec<String> = Vec::new();
    while !input.is_empty() {
        input.parse::<Token![,]>()?;
        if input.is_empty() {
            break;
        }
        let key: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        let name = key.to_string();
        if !known.contains(&name.as_str()) {
            errors.push(error_with_help(
                key.span(),
                format!("unknown option `{name}`"),
                format!(
                    "the options are {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            // Skip the value so later options are still checked.
            input.parse::<syn::Expr>()?;
            continue;
        }
        if seen.contains(&name) {
            errors.push(syn::Error::new(
                key.span(),
                format!("option `{name}` is given twice"),
            ));
        }
        seen.push(name);
        option(&key, input, errors)?;
    }
    Ok(())
}

impl ControllerArgs {
    pub fn parse(input: ParseStream, errors: &mut Errors) -> syn::Result<Self> {
        let prefix = parse_path(input, "#[sse_controller(\"/events\")] (or \"/\" for none)")?;
        let mut state = None;
        parse_options(input, errors, &["state"], |_, input, _| {
            state = Some(input.parse::<Type>()?);
            Ok(())
        })?;
        Ok(ControllerArgs { prefix, state })
    }
}

impl RouteArgs {
    /// A plain route's arguments: its path and method, and no stream options.
    pub fn plain(path: LitStr, method: HttpMethod) -> Self {
        RouteArgs {
            path,
            keep_alive: SwitchableDuration::Default,
            batch_window: SwitchableDuration::Default,
            write_stall: SwitchableDuration::Default,
            retry_ms: None,
            method,
        }
    }

    pub fn parse(input: ParseStream, errors: &mut Errors) -> syn::Result<Self> {
        let path = parse_path(input, "#[sse(\"/stream\")]")?;
        let mut args = RouteArgs {
            path,
            keep_alive: SwitchableDuration::Default,
            batch_window: SwitchableDuration::Default,
            write_stall: SwitchableDuration::Default,
            retry_ms: None,
            method: HttpMethod::Get,
        };
        parse_options(
            input,
            errors,
            &[
                "keep_alive",
                "retry",
                "batch_window",
                "write_stall",
                "method",
            ],
            |key, input, errors| {
                match key.to_string().as_str() {
                    name @ ("keep_alive" | "batch_window" | "write_stall") => {
                        let (setting, help) = match name {
                            "keep_alive" => (
                                &mut args.keep_alive,
                                "`keep_alive` takes a duration such as \"15s\", or `false` to turn it off",
                            ),
                            "batch_window" => (
                                &mut args.batch_window,
                                "`batch_window` takes a duration such as \"5ms\", or `false` to write every event at once",
                            ),
                            _ => (
                                &mut args.write_stall,
                                "`write_stall` takes a duration such as \"10s\", or `false` to never close a stalled connection",
                            ),
                        };
                        *setting = parse_switchable(input, errors, help)?.unwrap_or(*setting);
                    }
                    "retry" => {
                        let value: OptionValue = input.parse()?;
                        args.retry_ms = value.duration_ms(
                            errors,
                            "`retry` takes a duration such as \"3s\" or \"500ms\"",
                        );
                    }
                    _ => {
                        let value: OptionValue = input.parse()?;
                        if let Some(method) = value.method(errors) {
                            args.method = method;
                        }
                    }
                }
                Ok(())
            },
        )?;
        Ok(args)
    }
}

/// `true` (the default), `false` (off) or a duration literal; `None` after a
/// reported mistake.
fn parse_switchable(
    input: ParseStream,
    errors: &mut Errors,
    help: &str,
) -> syn::Result<Option<SwitchableDuration>> {
    if input.peek(LitBool) {
        let on: LitBool = input.parse()?;
        return Ok(Some(if on.value {
            SwitchableDuration::Default
        } else {
            SwitchableDuration::Off
        }));
    }
    let value: OptionValue = input.parse()?;
    Ok(value
        .duration_ms(errors, help)
        .map(SwitchableDuration::EveryMs))
}

/// An option's value: a string literal, or anything else (reported as an error).
struct OptionValue {
    literal: Option<LitStr>,
    span: Span,
}

impl Parse for OptionValue {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let expr: syn::Expr = input.parse()?;
        let span = syn::spanned::Spanned::span(&expr);
        let literal = match expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(lit),
                ..
            }) => Some(lit),
            _ => None,
        };
        Ok(OptionValue { literal, span })
    }
}

impl OptionValue {
    fn duration_ms(&self, errors: &mut Errors, help: &str) -> Option<u64> {
        let Some(literal) = &self.literal else {
            errors.push(error_with_help(
                self.span,
                "expected a string literal",
                help,
            ));
            return None;
        };
        match parse_duration_ms(&literal.value()) {
            Ok(ms) => Some(ms),
            Err(why) => {
                errors.push(error_with_help(literal.span(), why, help));
                None
            }
        }
    }

    fn method(&self, errors: &mut Errors) -> Option<HttpMethod> {
        let value = self
            .literal
            .as_ref()
            .map(|l| l.value().to_ascii_lowercase());
        match value.as_deref() {
            Some("get") => Some(HttpMethod::Get),
            Some("post") => Some(HttpMethod::Post),
            _ => {
                errors.push(error_with_help(
                    self.span,
                    "unsupported method",
                    "write `method = \"get\"` (the default, what `EventSource` uses) or \
                     `method = \"post\"` (for clients that send a body, as LLM APIs do)",
                ));
                None
            }
        }
    }
}

/// `"250ms"`, `"15s"`, `"2m"`, `"1h"` as milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let bad =
        || format!("invalid duration {text:?}: write a whole number and a unit: ms, s, m or h");
    if digits.is_empty() {
        return Err(bad());
    }
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    let ms = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("duration {text:?} is too large"))?;
    if ms == 0 {
        return Err(format!("duration {text:?} must be greater than zero"));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("15s"), Ok(15_000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        for bad in [
            "",
            "s",
            "5",
            "5 s",
            "1.5s",
            "-1s",
            "5sec",
            "0s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }
}
