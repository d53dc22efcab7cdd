{{/* The release's base name: the release name, with "-govchain" unless it already says govchain. */}}
{{- define "govchain.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "govchain.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "govchain.labels" -}}
{{ include "govchain.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "govchain.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "govchain.peersService" -}}
{{ include "govchain.fullname" . }}-peers
{{- end -}}

{{/* The stable DNS name of a pod: (dict "root" $ "pod" "name-0"). */}}
{{- define "govchain.podHost" -}}
{{ .pod }}.{{ include "govchain.peersService" .root }}.{{ .root.Release.Namespace }}.svc.{{ .root.Values.clusterDomain }}
{{- end -}}

{{/*
Checks what JSON schema cannot express: department names and Secret names
are distinct across validators and observers.
*/}}
{{- define "govchain.checkMembers" -}}
{{- $seen := dict -}}
{{- $secrets := dict -}}
{{- $members := concat .Values.validators (.Values.observers.members | default list) -}}
{{- range $member := $members -}}
{{- if hasKey $seen $member.name -}}
{{- fail (printf "department %q is listed twice in validators/observers.members: each entry must be a distinct department of genesis" $member.name) -}}
{{- end -}}
{{- $_ := set $seen $member.name true -}}
{{- if hasKey $secrets $member.secretName -}}
{{- fail (printf "secretName %q is used by both %q and %q: each department's node has its own Secret" $member.secretName (get $secrets $member.secretName) $member.name) -}}
{{- end -}}
{{- $_ := set $secrets $member.secretName $member.name -}}
{{- end -}}
{{- end -}}

{{/*
One node.toml: (dict "root" $ "member" $member "observer" bool).
Paths are where the pod mounts them; peers are every validator but itself.
*/}}
{{- define "govchain.nodeToml" -}}
{{- $root := .root -}}
{{- $fullname := include "govchain.fullname" $root -}}
{{- $dir := printf "/etc/govchain/credentials/%s" .member.name -}}
name = {{ .member.name | quote }}
listen = "0.0.0.0:{{ $root.Values.ports.grpc }}"
health_listen = "0.0.0.0:{{ $root.Values.ports.health }}"
{{- if $root.Values.metrics.enabled }}
metrics_listen = "0.0.0.0:{{ $root.Values.ports.metrics }}"
{{- end }}
data_dir = "/var/lib/govchain"
genesis = "/etc/govchain/genesis/genesis.json"
ca_certificate = "{{ $dir }}/ca.crt"
certificate = "{{ $dir }}/node.crt"
key = "{{ $dir }}/node.key"
consensus_key = "{{ $dir }}/consensus.key"
{{- if .observer }}
observer = true
{{- if $root.Values.observers.stateSync }}
state_sync = true
{{- end }}
{{- with $root.Values.observers.pruneHorizonBlocks }}
prune_horizon_blocks = {{ . | int64 }}
{{- end }}
{{- else }}
{{- with $root.Values.node.pruneHorizonBlocks }}
prune_horizon_blocks = {{ . | int64 }}
{{- end }}
{{- end }}
{{- range $index, $peer := $root.Values.validators }}
{{- if ne $peer.name $.member.name }}

[[peers]]
name = {{ $peer.name | quote }}
address = "https://{{ include "govchain.podHost" (dict "root" $root "pod" (printf "%s-validator-%d" $fullname $index)) }}:{{ $root.Values.ports.grpc }}"
{{- end }}
{{- end }}
{{- with $root.Values.node.mempool }}

[mempool]
{{- range $key, $value := . }}
{{ $key }} = {{ $value | int64 }}
{{- end }}
{{- end }}
{{- with $root.Values.node.blobs }}

[blobs]
{{- range $key, $value := . }}
{{ $key }} = {{ $value | int64 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The config files of one StatefulSet: (dict "root" $ "role" "validator"|"observer"). */}}
{{- define "govchain.configFiles" -}}
{{- $root := .root -}}
{{- $members := ternary $root.Values.validators ($root.Values.observers.members | default list) (eq .role "validator") -}}
{{- range $index, $member := $members }}
{{ include "govchain.fullname" $root }}-{{ $.role }}-{{ $index }}.toml: |
{{ include "govchain.nodeToml" (dict "root" $root "member" $member "observer" (eq $.role "observer")) | indent 2 }}
{{- end }}
{{- end -}}
