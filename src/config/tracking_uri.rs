//! The tracking URI a config names (`run.track`): an MLflow server's http(s) address
//! ([`check_uri`]), and the credentials for it. They come from the URI's user-info
//! (`http://user:secret@host`, for this process only) or, as MLflow's own clients read them,
//! from `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD` (basic) or
//! `MLFLOW_TRACKING_TOKEN` (bearer). They are never written, logged or printed: the URI dfm keeps
//! (in `config.toml`, the MLflow params, bundles, messages) is the one without them.

/// What a request to the tracking server authenticates with.
#[derive(Clone, Default, PartialEq)]
pub struct Credentials {
    basic: Option<(String, String)>,
    token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match (&self.basic, &self.token) {
            (Some(_), _) => "basic, redacted",
            (None, Some(_)) => "token, redacted",
            (None, None) => "none",
        };
        write!(f, "Credentials({what})")
    }
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.basic.is_none() && self.token.is_none()
    }

    /// The URI without its user-info, and the credentials the user-info held. URIs that do not
    /// parse are cut the same way (so that an error message about one shows no secret).
    pub fn split(uri: &str) -> (String, Credentials) {
        let Some((scheme, rest)) = uri.split_once("://") else {
            return (uri.to_string(), Credentials::default());
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let Some((userinfo, host)) = authority.rsplit_once('@') else {
            return (uri.to_string(), Credentials::default());
        };
        let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let creds = Credentials {
            basic: Some((percent_decode(user), percent_decode(pass))),
            token: None,
        };
        (format!("{scheme}://{host}{path}"), creds)
    }

    /// MLflow's environment variables (an empty variable counts as unset).
    pub fn from_env() -> Credentials {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let basic = var("MLFLOW_TRACKING_USERNAME")
            .map(|u| (u, var("MLFLOW_TRACKING_PASSWORD").unwrap_or_default()));
        Credentials {
            basic,
            token: var("MLFLOW_TRACKING_TOKEN"),
        }
    }

    /// These credentials, else `other`.
    pub fn or(self, other: Credentials) -> Credentials {
        if self.is_empty() { other } else { self }
    }

    /// A request with these credentials.
    pub fn apply(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (&self.basic, &self.token) {
            (Some((u, p)), _) => r.basic_auth(u, Some(p)),
            (None, Some(t)) => r.bearer_auth(t),
            (None, None) => r,
        }
    }
}

/// A URI as it may be shown: without user-info.
pub fn redact(uri: &str) -> String {
    Credentials::split(uri).0
}

/// `%XX` sequences decoded (user-info is percent-encoded in a URI); bad sequences kept as
/// they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a tracking URI: an MLflow server's http(s) address (shown without user-info).
pub fn check_uri(uri: &str) -> anyhow::Result<()> {
    let ok = (uri.starts_with("http://") || uri.starts_with("https://"))
        && reqwest::Url::parse(uri).is_ok_and(|u| u.host().is_some());
    if !ok {
        anyhow::bail!(
            "tracking URI {:?}: an MLflow tracking server's address, like http://127.0.0.1:5000",
            redact(uri)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_uris() {
        assert!(check_uri("http://127.0.0.1:5000").is_ok());
        assert!(check_uri("https://mlflow.example.com/").is_ok());
        for bad in ["", "file:///tmp/mlruns", "127.0.0.1:5000", "http://"] {
            assert!(check_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_info_is_cut_from_the_uri_and_kept_apart() {
        let (u, c) = Credentials::split("http://alice:s%40cret@127.0.0.1:5000/mlflow");
        assert_eq!(u, "http://127.0.0.1:5000/mlflow");
        assert_eq!(c.basic, Some(("alice".into(), "s@cret".into())));
        assert!(!format!("{c:?}").contains("cret"));
        let (u, c) = Credentials::split("https://host/p?q=a@b");
        assert_eq!(u, "https://host/p?q=a@b");
        assert!(c.is_empty());
        assert_eq!(redact("http://t0ken@h:1"), "http://h:1");
        assert_eq!(redact("not a uri user:pw@x"), "not a uri user:pw@x");
        assert_eq!(redact("x://user:pw@"), "x://");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
