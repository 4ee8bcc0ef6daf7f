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

/// `#[sse("/path", keep_alive = "5s", retry = "3s", batch_window = "5ms", write_stall = "10s", method = "post", compress = true)]`
pub struct RouteArgs {
    pub path: LitStr,
    pub compress: bool,
    pub keep_alive: SwitchableDuration,
    pub batch_window: SwitchableDuration,
    pub write_stall: SwitchableDuration,
    pub retry_ms: Option<u64>,
    pub method: HttpMethod,
}

/// A duration option that also takes `false` (off) and has a runtime default.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
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

/// Every method: its attribute (`#[get]`, ...), which is also how
/// `method = "..."` spells it, and its HTTP name.
const METHODS: [(HttpMethod, &str, &str); 5] = [
    (HttpMethod::Get, "get", "GET"),
    (HttpMethod::Post, "post", "POST"),
    (HttpMethod::Put, "put", "PUT"),
    (HttpMethod::Patch, "patch", "PATCH"),
    (HttpMethod::Delete, "delete", "DELETE"),
];

/// The methods an event stream may be opened with: `GET`, what `EventSource`
/// uses, and `POST`, for clients that send a body.
const STREAM_METHODS: [HttpMethod; 2] = [HttpMethod::Get, HttpMethod::Post];

impl HttpMethod {
    pub fn name(self) -> &'static str {
        METHODS
            .iter()
            .find(|(method, _, _)| *method == self)
            .map_or("GET", |(_, _, name)| name)
    }

    /// The method of a plain-route attribute (`#[get]`, `#[post]`, ...).
    pub fn of_attribute(name: &str) -> Option<HttpMethod> {
        METHODS
            .iter()
            .find(|(_, attribute, _)| *attribute == name)
            .map(|(method, _, _)| *method)
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
            compress: false,
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
            compress: false,
            keep_alive: SwitchableDuration::Default,
            batch_window: SwitchableDuration::Default,
            write_stall: SwitchableDuration::Default,
            retry_ms: None,
            method: HttpMethod::Get,
        };
        let names = ROUTE_OPTIONS.map(|(name, _, _)| name);
        parse_options(input, errors, &names, |key, input, errors| {
            let key = key.to_string();
            let Some((_, option, help)) = ROUTE_OPTIONS.iter().find(|(name, _, _)| *name == key)
            else {
                return Ok(()); // parse_options accepts only the names given.
            };
            match option {
                RouteOption::Setting(field) => {
                    let setting = field.of(&mut args);
                    *setting = parse_switchable(input, errors, help)?.unwrap_or(*setting);
                }
                RouteOption::Retry => {
                    let value: OptionValue = input.parse()?;
                    args.retry_ms = value.duration_ms(errors, help);
                }
                RouteOption::Method => {
                    let value: OptionValue = input.parse()?;
                    if let Some(method) = value.method(errors, help) {
                        args.method = method;
                    }
                }
                RouteOption::Compress => {
                    if input.peek(LitBool) {
                        args.compress = input.parse::<LitBool>()?.value;
                    } else {
                        let value: OptionValue = input.parse()?;
                        errors.push(error_with_help(
                            value.span,
                            "expected `true` or `false`",
                            help,
                        ));
                    }
                }
            }
            Ok(())
        })?;
        Ok(args)
    }
}

/// The options of `#[sse]`: each name, what it takes, and the help an error
/// about it gives.
const ROUTE_OPTIONS: [(&str, RouteOption, &str); 6] = [
    (
        "keep_alive",
        RouteOption::Setting(Setting::KeepAlive),
        "`keep_alive` takes a duration such as \"15s\", or `false` to turn it off",
    ),
    (
        "retry",
        RouteOption::Retry,
        "`retry` takes a duration such as \"3s\" or \"500ms\"",
    ),
    (
        "batch_window",
        RouteOption::Setting(Setting::BatchWindow),
        "`batch_window` takes a duration such as \"5ms\", or `false` to write every event at once",
    ),
    (
        "write_stall",
        RouteOption::Setting(Setting::WriteStall),
        "`write_stall` takes a duration such as \"10s\", or `false` to never close a stalled connection",
    ),
    (
        "method",
        RouteOption::Method,
        "write `method = \"get\"` (the default, what `EventSource` uses) or \
         `method = \"post\"` (for clients that send a body, as LLM APIs do)",
    ),
    (
        "compress",
        RouteOption::Compress,
        "write `compress = true` to compress the stream (zstd or gzip, as the client accepts; \
         feature `compression`), only where it carries no secret beside attacker-chosen text",
    ),
];

/// What a route option takes.
#[derive(Clone, Copy)]
enum RouteOption {
    /// A duration, `true` (the default) or `false` (off).
    Setting(Setting),
    /// A duration.
    Retry,
    /// `"get"` or `"post"`.
    Method,
    /// `true` or `false`.
    Compress,
}

/// The route options that are a [`SwitchableDuration`].
#[derive(Clone, Copy)]
enum Setting {
    KeepAlive,
    BatchWindow,
    WriteStall,
}

impl Setting {
    fn of(self, args: &mut RouteArgs) -> &mut SwitchableDuration {
        match self {
            Setting::KeepAlive => &mut args.keep_alive,
            Setting::BatchWindow => &mut args.batch_window,
            Setting::WriteStall => &mut args.write_stall,
        }
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

    fn method(&self, errors: &mut Errors, help: &str) -> Option<HttpMethod> {
        let value = self
            .literal
            .as_ref()
            .map(|l| l.value().to_ascii_lowercase());
        let method = value.as_deref().and_then(HttpMethod::of_attribute);
        match method.filter(|method| STREAM_METHODS.contains(method)) {
            Some(method) => Some(method),
            None => {
                errors.push(error_with_help(self.span, "unsupported method", help));
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
    use super::*;

    fn route(tokens: proc_macro2::TokenStream) -> (RouteArgs, Errors) {
        let mut errors = Errors::default();
        let args = syn::parse::Parser::parse2(
            |input: ParseStream| RouteArgs::parse(input, &mut errors),
            tokens,
        )
        .expect("parses");
        (args, errors)
    }

    #[test]
    fn every_route_option_reaches_its_setting() {
        let (args, errors) = route(quote::quote!(
            "/x",
            keep_alive = false,
            retry = "3s",
            batch_window = "250ms",
            write_stall = "10s",
            method = "POST"
        ));
        assert!(errors.is_empty());
        assert_eq!(args.keep_alive, SwitchableDuration::Off);
        assert_eq!(args.retry_ms, Some(3000));
        assert_eq!(args.batch_window, SwitchableDuration::EveryMs(250));
        assert_eq!(args.write_stall, SwitchableDuration::EveryMs(10_000));
        assert_eq!(args.method, HttpMethod::Post);
        let (args, errors) = route(quote::quote!("/x", batch_window = false));
        assert!(errors.is_empty());
        assert_eq!(args.batch_window, SwitchableDuration::Off);
        assert_eq!(args.keep_alive, SwitchableDuration::Default);
    }

    #[test]
    fn a_stream_takes_get_or_post_and_plain_routes_every_method() {
        let (_, errors) = route(quote::quote!("/x", method = "delete"));
        assert!(!errors.is_empty());
        for (attribute, name) in [
            ("get", "GET"),
            ("post", "POST"),
            ("put", "PUT"),
            ("patch", "PATCH"),
            ("delete", "DELETE"),
        ] {
            assert_eq!(
                HttpMethod::of_attribute(attribute).map(HttpMethod::name),
                Some(name)
            );
        }
        assert_eq!(HttpMethod::of_attribute("head"), None);
    }

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
