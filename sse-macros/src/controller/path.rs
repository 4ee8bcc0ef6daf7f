//! Route paths: NestJS's `:name` and axum's `{name}` / `{*name}` parameters,
//! checked and normalised to axum's syntax at compile time.

/// A checked route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePath {
    /// The path in axum 0.8 syntax (`/user/{userId}`).
    pub axum: String,
    /// Parameter names in order.
    pub params: Vec<String>,
}

impl RoutePath {
    /// The path with every parameter name replaced by `{}`: two routes with the
    /// same shape collide in axum's router whatever their names.
    pub fn path_shape(&self) -> String {
        let mut shape = String::new();
        for segment in self.axum.split('/').skip(1) {
            shape.push('/');
            if segment.starts_with("{*") {
                shape.push_str("{*}");
            } else if segment.starts_with('{') {
                shape.push_str("{}");
            } else {
                shape.push_str(segment);
            }
        }
        if shape.is_empty() { "/".into() } else { shape }
    }

    /// `prefix` followed by `route`: `/events` + `/ping` is `/events/ping`,
    /// `/` + `/ping` is `/ping`, `/events` + `/` is `/events`.
    pub fn join(prefix: &RoutePath, route: &RoutePath) -> Result<RoutePath, String> {
        let prefix_part = prefix.axum.trim_end_matches('/');
        let route_part = if route.axum == "/" {
            ""
        } else {
            route.axum.as_str()
        };
        let mut axum = format!("{prefix_part}{route_part}");
        if axum.is_empty() {
            axum.push('/');
        }
        if let Some(catch_all) = prefix.params.last().filter(|_| prefix.axum.contains("{*")) {
            return Err(format!(
                "the controller prefix ends in the catch-all `{{*{catch_all}}}`, so no route can follow it"
            ));
        }
        let mut params = prefix.params.clone();
        for name in &route.params {
            if params.contains(name) {
                return Err(format!(
                    "path parameter `{name}` is already used by the controller prefix"
                ));
            }
            params.push(name.clone());
        }
        Ok(RoutePath { axum, params })
    }
}

/// Parses and checks `path`. The error says what is wrong and how to write it.
pub fn parse(path: &str) -> Result<RoutePath, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "a route path must start with `/`: write \"/{path}\""
        ));
    }
    if let Some(bad) = path
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '?' | '#'))
    {
        return Err(format!(
            "a route path cannot contain {bad:?}: query strings are read with the `Query` extractor"
        ));
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let mut axum = String::with_capacity(path.len() + 4);
    let mut params: Vec<String> = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        axum.push('/');
        if segment.is_empty() {
            if is_last {
                continue; // "/" itself, or a trailing slash
            }
            return Err("a route path cannot contain an empty segment (`//`)".into());
        }
        let (name, catch_all) = match param_of(segment)? {
            Some(param) => param,
            None => {
                axum.push_str(segment);
                continue;
            }
        };
        if !is_identifier(name) {
            return Err(format!(
                "`{name}` is not a valid path parameter name: use letters, digits and `_`, not starting with a digit"
            ));
        }
        if catch_all && !is_last {
            return Err(format!(
                "the catch-all parameter `{{*{name}}}` must be the last segment"
            ));
        }
        if params.iter().any(|seen| seen == name) {
            return Err(format!("path parameter `{name}` appears twice"));
        }
        params.push(name.to_owned());
        axum.push_str(if catch_all { "{*" } else { "{" });
        axum.push_str(name);
        axum.push('}');
    }
    Ok(RoutePath { axum, params })
}

/// `Some((name, is_catch_all))` when the segment is a parameter.
fn param_of(segment: &str) -> Result<Option<(&str, bool)>, String> {
    if let Some(name) = segment.strip_prefix(':') {
        return Ok(Some((name, false)));
    }
    if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        return Ok(Some(match inner.strip_prefix('*') {
            Some(name) => (name, true),
            None => (inner, false),
        }));
    }
    if segment.contains(['{', '}']) {
        return Err(format!(
            "`{segment}`: a parameter must be a whole segment, written `{{name}}` or `:name`"
        ));
    }
    if segment.starts_with('*') {
        return Err(format!(
            "`{segment}`: write a catch-all parameter as `{{*name}}`"
        ));
    }
    Ok(None)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_paths_normalise_to_axum_syntax() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("/", "/", &[]),
            ("/sse-stream", "/sse-stream", &[]),
            ("/user/:userId", "/user/{userId}", &["userId"]),
            ("/user/{userId}", "/user/{userId}", &["userId"]),
            ("/a/:x/b/{y}", "/a/{x}/b/{y}", &["x", "y"]),
            ("/files/{*rest}", "/files/{*rest}", &["rest"]),
            ("/trailing/", "/trailing/", &[]),
            ("/_x1/:_", "/_x1/{_}", &["_"]),
            ("/v1:chat", "/v1:chat", &[]),
        ];
        for (input, axum, params) in cases {
            let path = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(path.axum, *axum, "{input}");
            assert_eq!(path.params, *params, "{input}");
        }
    }

    #[test]
    fn rejected_paths_say_why() {
        let cases = [
            ("events", "must start with `/`"),
            ("", "must start with `/`"),
            ("/a//b", "empty segment"),
            ("/:1st", "not a valid path parameter name"),
            ("/:", "not a valid path parameter name"),
            ("/{user-id}", "not a valid path parameter name"),
            ("/:id/:id", "appears twice"),
            ("/:id/{id}", "appears twice"),
            ("/file-{id}", "whole segment"),
            ("/{id", "whole segment"),
            ("/*rest", "catch-all"),
            ("/{*rest}/more", "must be the last segment"),
            ("/a b", "cannot contain"),
            ("/a?b=1", "cannot contain"),
        ];
        for (input, expected) in cases {
            let error = parse(input).expect_err(input);
            assert!(error.contains(expected), "{input}: {error}");
        }
    }

    #[test]
    fn shape_ignores_parameter_names() {
        assert_eq!(
            parse("/a/:x").unwrap().path_shape(),
            parse("/a/{y}").unwrap().path_shape()
        );
        assert_ne!(
            parse("/a/:x").unwrap().path_shape(),
            parse("/a/{*y}").unwrap().path_shape()
        );
        assert_eq!(parse("/").unwrap().path_shape(), "/");
    }

    #[test]
    fn join_prefix_and_route() {
        let cases = [
            ("/events", "/ping", "/events/ping"),
            ("/events/", "/ping", "/events/ping"),
            ("/", "/ping", "/ping"),
            ("/events", "/", "/events"),
            ("/", "/", "/"),
            ("/t/:tenant", "/u/:user", "/t/{tenant}/u/{user}"),
        ];
        for (prefix, route, expected) in cases {
            let joined = RoutePath::join(&parse(prefix).unwrap(), &parse(route).unwrap()).unwrap();
            assert_eq!(joined.axum, expected);
        }
        let repeated = RoutePath::join(&parse("/:id").unwrap(), &parse("/:id").unwrap());
        assert!(
            repeated
                .unwrap_err()
                .contains("already used by the controller prefix")
        );
    }
}
