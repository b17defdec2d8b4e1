{{/* The labels every object carries, as manifests/ gives them. */}}
{{- define "kubeecr.labels" -}}
app.kubernetes.io/name: kubeecr
app.kubernetes.io/part-of: kubeecr
{{- end }}

{{/* The image, by tag (the chart's appVersion unless set) and digest when given. */}}
{{- define "kubeecr.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- .Values.image.repository }}:{{ $tag }}
{{- /* A digest pins the chart's own version; a tag naming another version means that image. */}}
{{- if and .Values.image.digest (eq $tag .Chart.AppVersion) }}@{{ .Values.image.digest }}{{ end }}
{{- end }}

{{/* Served namespaces, less the excluded ones. */}}
{{- define "kubeecr.served" -}}
{{- $served := list }}
{{- range .Values.namespaces }}
{{- if not (has . $.Values.excludeNamespaces) }}{{ $served = append $served . }}{{ end }}
{{- end }}
{{- toJson $served }}
{{- end }}

{{/* Which namespaces' Secret writes reach the webhooks: never kube-system, the release
namespace (with failurePolicy Fail its Secrets could not be written while kubeecr is down) or
an excluded one; only the served ones when some are named. */}}
{{- define "kubeecr.webhookNamespaces" -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: {{ concat (list "kube-system" .Release.Namespace) .Values.excludeNamespaces | uniq | toJson }}
  {{- with .Values.namespaces }}
  - key: kubernetes.io/metadata.name
    operator: In
    values: {{ include "kubeecr.served" $ }}
  {{- end }}
{{- end }}

{{/* kubeecr's ServiceAccount, as the API server names it in requests. */}}
{{- define "kubeecr.username" -}}
system:serviceaccount:{{ .Release.Namespace }}:kubeecr
{{- end }}

{{/* The flags both subcommands take from the values, one per line. */}}
{{- define "kubeecr.policyArgs" -}}
{{- with .Values.rules.allowedRoleArns }}
- {{ printf "--allowed-role-arns=%s" (join "," .) | quote }}
{{- end }}
{{- with .Values.rules.allowedRegistries }}
- {{ printf "--allowed-registries=%s" (join "," .) | quote }}
{{- end }}
{{- with .Values.rules.ownIdentityNamespaces }}
- {{ printf "--own-identity-namespaces=%s" (join "," .) | quote }}
{{- end }}
{{- with .Values.namespaces }}
- {{ printf "--namespaces=%s" (join "," .) | quote }}
{{- end }}
{{- with .Values.excludeNamespaces }}
- {{ printf "--exclude-namespaces=%s" (join "," .) | quote }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* The AWS keys, each read by name and optional: an envFrom would let whoever can write
that Secret set any variable. */}}
{{- define "kubeecr.awsEnv" -}}
{{- range list "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" "AWS_SESSION_TOKEN" }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.aws.credentialsSecret }}
      key: {{ . }}
      optional: true
{{- end }}
{{- end }}

{{/* Pod-level settings shared by both forms. */}}
{{- define "kubeecr.podExtras" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Values that do not go together, refused with what to change. */}}
{{- define "kubeecr.checks" -}}
{{- if and (not .Values.tls.certManager) (eq .Values.mode "serve") (not (contains "BEGIN CERTIFICATE" (b64dec .Values.tls.caBundle))) }}
{{- fail "tls.caBundle: without cert-manager (tls.certManager=false), give the base64 of the PEM CA certificate that signed Secret kubeecr-webhook-tls (`kubeecr certs --out DIR` writes it, in DIR/ca-bundle.env)" }}
{{- end }}
{{- if and .Values.apiServerAuth.requireClientCertificate (not .Values.apiServerAuth.issueClientCertificate) }}
{{- fail "apiServerAuth.requireClientCertificate: keep issueClientCertificate=true, and give the API server that certificate first (docs/security.md); otherwise every opted-in Secret write fails" }}
{{- end }}
{{- if and .Values.apiServerAuth.issueClientCertificate (not .Values.tls.certManager) }}
{{- fail "apiServerAuth.issueClientCertificate needs cert-manager (tls.certManager=true); without it, issue the API server's client certificate from your own CA" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.apiServerCIDRs) }}
{{- fail "networkPolicy.apiServerCIDRs: list the addresses your API server connects from (kubectl get endpoints kubernetes -n default), or the webhook is unreachable and every opted-in Secret write fails" }}
{{- end }}
{{- $ns := "(\\*|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)" }}
{{- range $i, $rule := .Values.rules.allowedRoleArns }}
{{- if not (regexMatch (printf "^%s=[^,\\s]+$" $ns) $rule) }}
{{- fail (printf "rules.allowedRoleArns[%d] %q: write namespace=<role ARN pattern>, one rule per item, e.g. team-a=arn:aws:iam::111111111111:role/kubeecr-team-a (*=... allows it in every namespace)" $i $rule) }}
{{- end }}
{{- end }}
{{- range $i, $rule := .Values.rules.allowedRegistries }}
{{- if not (regexMatch (printf "^%s=[^,\\s/]+/[^,\\s/]+$" $ns) $rule) }}
{{- fail (printf "rules.allowedRegistries[%d] %q: write namespace=<account>/<region>, one rule per item, e.g. team-a=111111111111/* (*=111111111111/* allows it in every namespace)" $i $rule) }}
{{- end }}
{{- end }}
{{- with .Values.rules.ownIdentityNamespaces }}
{{- if and (has "none" .) (gt (len .) 1) }}
{{- fail (printf "rules.ownIdentityNamespaces %v: none stands alone; list namespace names, or [none] for no namespace" .) }}
{{- end }}
{{- end }}
{{- if and .Values.namespaces (eq (include "kubeecr.served" . | fromJsonArray | len) 0) }}
{{- fail "namespaces: every namespace listed is also in excludeNamespaces, so kubeecr would serve none; take them out of one list" }}
{{- end }}
{{- if and .Values.monitoring.serviceMonitor.enabled .Values.monitoring.podMonitor.enabled }}
{{- fail "monitoring: enable serviceMonitor or podMonitor, not both: each pod would be scraped twice, and every sum doubled" }}
{{- end }}
{{- if and (ne .Values.mode "serve") (or .Values.apiServerAuth.requireClientCertificate .Values.networkPolicy.enabled) }}
{{- fail "apiServerAuth and networkPolicy concern the webhook, which mode=cronjob does not run; turn them off" }}
{{- end }}
{{- end }}
