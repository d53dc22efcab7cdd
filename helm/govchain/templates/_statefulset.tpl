{{/*
A StatefulSet of govchain nodes: (dict "root" $ "role" "validator"|"observer"
"members" list "resources" map "placement" map). Pod <name>-<i> reads
<name>-<i>.toml from the config ConfigMap, which names members[i]; every
member's node Secret is mounted (a StatefulSet's pods share one template) under
/etc/govchain/credentials/<department>/, and the node reads only its own.
*/}}
{{- define "govchain.statefulset" -}}
{{- $root := .root -}}
{{- $fullname := include "govchain.fullname" $root -}}
{{- $name := printf "%s-%s" $fullname .role -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ $name }}
  labels:
    {{- include "govchain.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .role }}
spec:
  serviceName: {{ include "govchain.peersService" $root }}
  replicas: {{ len .members }}
  # PBFT needs a quorum up to commit anything: start every pod at once.
  podManagementPolicy: Parallel
  updateStrategy:
    type: RollingUpdate
  selector:
    matchLabels:
      {{- include "govchain.selectorLabels" $root | nindent 6 }}
      app.kubernetes.io/component: {{ .role }}
  template:
    metadata:
      labels:
        {{- include "govchain.selectorLabels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .role }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "govchain.configFiles" (dict "root" $root "role" .role) | sha256sum }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $root.Values.spreadAcrossNodes }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "govchain.selectorLabels" $root | nindent 14 }}
              app.kubernetes.io/component: {{ .role }}
      {{- end }}
      {{- with .placement.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .placement.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .placement.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: govchain
          image: {{ include "govchain.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            - node
            - --config
            - /etc/govchain/config/$(POD_NAME).toml
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: GOVCHAIN_LOG
              value: {{ $root.Values.node.logLevel | quote }}
            {{- with $root.Values.node.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: grpc
              containerPort: {{ $root.Values.ports.grpc }}
            - name: health
              containerPort: {{ $root.Values.ports.health }}
            {{- if $root.Values.metrics.enabled }}
            - name: metrics
              containerPort: {{ $root.Values.ports.metrics }}
            {{- end }}
          # Kubernetes' gRPC probe speaks plaintext only, so the node serves
          # grpc.health.v1 alone on a second, plaintext port (health_listen).
          startupProbe:
            grpc:
              port: {{ $root.Values.ports.health }}
              service: liveness
            periodSeconds: {{ $root.Values.probes.startup.periodSeconds }}
            failureThreshold: {{ $root.Values.probes.startup.failureThreshold }}
          livenessProbe:
            grpc:
              port: {{ $root.Values.ports.health }}
              service: liveness
            periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
            failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
          readinessProbe:
            grpc:
              port: {{ $root.Values.ports.health }}
              service: ""
            periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
            failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /var/lib/govchain
            - name: config
              mountPath: /etc/govchain/config
              readOnly: true
            - name: genesis
              mountPath: /etc/govchain/genesis
              readOnly: true
            - name: credentials
              mountPath: /etc/govchain/credentials
              readOnly: true
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: config
          configMap:
            name: {{ $fullname }}-config
        - name: genesis
          configMap:
            name: {{ $root.Values.genesis.configMapName }}
            items:
              - key: genesis.json
                path: genesis.json
        - name: credentials
          projected:
            # Owner root, group fsGroup: readable by the node's group only.
            defaultMode: 0440
            sources:
              {{- range $member := .members }}
              - secret:
                  name: {{ $member.secretName }}
                  items:
                    {{- range $file := list "ca.crt" "node.crt" "node.key" "consensus.key" }}
                    - key: {{ $file }}
                      path: {{ $member.name }}/{{ $file }}
                    {{- end }}
              {{- end }}
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
  volumeClaimTemplates:
    - metadata:
        name: data
        labels:
          {{- include "govchain.selectorLabels" $root | nindent 10 }}
          app.kubernetes.io/component: {{ .role }}
      spec:
        accessModes:
          {{- toYaml $root.Values.persistence.accessModes | nindent 10 }}
        {{- with $root.Values.persistence.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $root.Values.persistence.size }}
{{- end -}}
