//! The demo's built-in cloud fixtures: one small HTTP server per cloud answering the few
//! requests its adapter makes to discover services, with documents shaped as the real APIs
//! shape them (S3 and EC2 XML, Azure Blob's container listing, Keystone's token and catalog,
//! the GCS JSON API). They are not the clouds: they check no signature and hold a handful of
//! made-up services. Where the real emulators are installed the demo runs those instead
//! ([`super::emulators`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use skybridge_gateway::config::{CloudConfig, CloudEndpoint, PluginFile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A cloud's flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// STS, S3, EC2.
    Aws,
    /// Blob storage.
    Azure,
    /// Keystone.
    OpenStack,
    /// Cloud Storage.
    Gcs,
}

impl Cloud {
    /// Every flavour, with the platform that fronts it in the demo.
    pub const ALL: [(Cloud, &'static str); 4] = [
        (Cloud::Aws, "site-a"),
        (Cloud::Azure, "site-b"),
        (Cloud::OpenStack, "site-c"),
        (Cloud::Gcs, "site-d"),
    ];

    /// What it is called.
    pub fn label(self) -> &'static str {
        match self {
            Cloud::Aws => "AWS (STS, S3, EC2)",
            Cloud::Azure => "Azure Blob storage",
            Cloud::OpenStack => "OpenStack Keystone",
            Cloud::Gcs => "Google Cloud Storage",
        }
    }

    /// What its real emulator checks of the site's requests, for people.
    pub fn enforces(self) -> &'static str {
        match self {
            Cloud::Aws => " (SigV4 enforced)",
            Cloud::Azure => " (Shared Key enforced)",
            Cloud::OpenStack => " (real Fernet tokens)",
            Cloud::Gcs => "",
        }
    }

    fn adapter(self) -> &'static str {
        match self {
            Cloud::Aws => "aws-adapter.wasm",
            Cloud::Azure => "azure-adapter.wasm",
            Cloud::OpenStack => "openstack-adapter.wasm",
            Cloud::Gcs => "gcs-adapter.wasm",
        }
    }

    /// The answer to one request: status, extra headers, body.
    fn answer(
        self,
        method: &str,
        path: &str,
        query: &str,
        body: &str,
    ) -> (u16, Vec<(&'static str, String)>, String) {
        let xml = |s: &str| (200, vec![("content-type", "application/xml".to_owned())], s.to_owned());
        let json = |status: u16, s: &str| {
            (status, vec![("content-type", "application/json".to_owned())], s.to_owned())
        };
        match self {
            Cloud::Aws if body.contains("Action=GetCallerIdentity") => {
                xml("<GetCallerIdentityResponse><GetCallerIdentityResult><Account>123456789012</Account>\
                 <Arn>arn:aws:iam::123456789012:user/discovery</Arn></GetCallerIdentityResult></GetCallerIdentityResponse>")
            }
            Cloud::Aws if body.contains("Action=DescribeRegions") => {
                xml("<DescribeRegionsResponse><regionInfo><item><regionName>us-east-1</regionName>\
                 <regionEndpoint>ec2.us-east-1.amazonaws.com</regionEndpoint></item></regionInfo></DescribeRegionsResponse>")
            }
            Cloud::Aws if body.contains("Action=DescribeInstances") => {
                xml("<DescribeInstancesResponse><reservationSet><item><instancesSet><item>\
                 <instanceId>i-0fixture</instanceId><instanceState><name>running</name></instanceState>\
                 <privateIpAddress>10.0.0.12</privateIpAddress></item></instancesSet></item></reservationSet>\
                 </DescribeInstancesResponse>")
            }
            Cloud::Aws if method == "GET" && path == "/" => xml("<ListAllMyBucketsResult><Buckets>\
                 <Bucket><Name>logs</Name><CreationDate>2026-01-05T10:00:00Z</CreationDate></Bucket>\
                 <Bucket><Name>reports</Name><CreationDate>2026-03-17T08:30:00Z</CreationDate></Bucket>\
                 </Buckets></ListAllMyBucketsResult>"),
            Cloud::Azure if query.contains("comp=list") => xml(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"fixture\"><Containers>\
                 <Container><Name>backups</Name><Properties><Last-Modified>Mon, 05 Jan 2026 10:00:00 GMT</Last-Modified></Properties></Container>\
                 <Container><Name>media</Name><Properties><Last-Modified>Tue, 17 Mar 2026 08:30:00 GMT</Last-Modified></Properties></Container>\
                 </Containers><NextMarker/></EnumerationResults>",
            ),
            Cloud::OpenStack if method == "POST" && path == "/v3/auth/tokens" => {
                let (status, mut headers, body) = json(
                    201,
                    r#"{"token":{"methods":["password"],"expires_at":"2099-01-01T00:00:00.000000Z"}}"#,
                );
                headers.push(("x-subject-token", "fixture-token".to_owned()));
                (status, headers, body)
            }
            Cloud::OpenStack if path == "/v3/auth/catalog" => json(
                200,
                r#"{"catalog":[
                  {"type":"object-store","name":"swift","id":"svc-swift","endpoints":[
                    {"id":"ep-swift-public","interface":"public","region_id":"RegionOne","url":"http://swift.lab:8080/v1"}]},
                  {"type":"compute","name":"nova","id":"svc-nova","endpoints":[
                    {"id":"ep-nova-public","interface":"public","region_id":"RegionOne","url":"http://nova.lab:8774/v2.1"}]}]}"#,
            ),
            Cloud::Gcs if path == "/storage/v1/b" => json(
                200,
                r#"{"kind":"storage#buckets","items":[
                  {"kind":"storage#bucket","name":"datasets","location":"EUROPE-WEST1","storageClass":"STANDARD"},
                  {"kind":"storage#bucket","name":"archive","location":"EUROPE-WEST1","storageClass":"COLDLINE"}]}"#,
            ),
            _ => (404, vec![], format!("the demo's {} fixture does not serve {method} {path}", self.label())),
        }
    }

    /// Serve this fixture on a free port of 127.0.0.1.
    pub async fn serve(self) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = self.serve_connection(s).await;
                });
            }
        });
        Ok(addr)
    }

    async fn serve_connection(self, mut s: tokio::net::TcpStream) -> std::io::Result<()> {
        // One request per connection, heads and bodies of a few KiB: what the adapters send.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 || buf.len() > 64 << 10 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0)
            .min(64 << 10);
        while buf.len() < head_end + 4 + length {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[head_end + 4..]).into_owned();
        let mut first = head.lines().next().unwrap_or_default().split_whitespace();
        let (method, target) = (first.next().unwrap_or_default(), first.next().unwrap_or("/"));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let (status, headers, answer) = self.answer(method, path, query, &body);
        let mut out =
            format!("HTTP/1.1 {status} Fixture\r\nContent-Length: {}\r\nConnection: close\r\n", answer.len());
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&answer);
        s.write_all(out.as_bytes()).await
    }

    /// The `[cloud]` of the site fronting this fixture at `addr`; secrets go into `dir`.
    pub fn fixture_config(self, addr: SocketAddr, plugins: &Path, dir: &Path) -> anyhow::Result<CloudConfig> {
        let (principal, secret, attributes): (&str, &str, &[(&str, &str)]) = match self {
            Cloud::Aws => ("AKIAFIXTUREDISCOVERY", "fixture-secret-key", &[("region", "us-east-1")]),
            // Azurite's published development key: the adapter signs with it.
            Cloud::Azure => (
                "devstoreaccount1",
                "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
                &[("region", "westeurope")],
            ),
            Cloud::OpenStack => ("discovery", "fixture-password", &[("project", "lab")]),
            Cloud::Gcs => {
                ("discovery@lab.iam.gserviceaccount.com", "fixture-access-token", &[("project", "lab")])
            }
        };
        self.config(&format!("http://{addr}"), principal, secret, attributes, plugins, dir)
    }

    /// The `[cloud]` of a site reaching this cloud at `url` as `principal` with `secret`
    /// (written to a file in `dir`, as a site reads it).
    pub fn config(
        self,
        url: &str,
        principal: &str,
        secret: &str,
        attributes: &[(&str, &str)],
        plugins: &Path,
        dir: &Path,
    ) -> anyhow::Result<CloudConfig> {
        let secret_file: PathBuf = dir.join(format!("{}.secret", self.adapter().trim_end_matches(".wasm")));
        std::fs::write(&secret_file, secret)?;
        Ok(CloudConfig {
            endpoints: vec![CloudEndpoint { name: "api".into(), url: url.to_owned() }],
            ca_file: None,
            principal: principal.into(),
            secret_file: Some(secret_file),
            attributes: attributes.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            adapter: PluginFile {
                path: plugins.join(self.adapter()),
                config: Default::default(),
                limits: Default::default(),
            },
            report_every_s: 3600,
            discovery: Default::default(),
        })
    }
}
