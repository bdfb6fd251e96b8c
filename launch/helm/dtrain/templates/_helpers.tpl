{{/* Shared pieces of the manifests. Only Go template + Sprig functions that dtrain's renderer
     (dtrain/commands/helm_template.py) implements: `dtrain k8s render` runs these same files. */}}

{{/* Values the schema cannot compare: dtrain runs one training process per GPU, so another count
     leaves GPUs idle (fewer processes) or puts two processes on one GPU (more). `dtrain k8s render`
     refuses the same before rendering. */}}
{{- define "dtrain.checkValues" -}}
{{- $v := .Values -}}
{{- if and $v.gpusPerNode (ne (int $v.nprocPerNode) (int $v.gpusPerNode)) -}}
{{- fail (printf "nprocPerNode=%v with gpusPerNode=%v: dtrain runs one training process per GPU; set nprocPerNode to the GPUs of a pod (gpusPerNode: 0 for a CPU run)" $v.nprocPerNode $v.gpusPerNode) -}}
{{- end -}}
{{- end }}

{{- define "dtrain.namespace" -}}
{{ .Values.namespace | default .Release.Namespace }}
{{- end }}

{{- define "dtrain.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ .Values.serviceAccount.name | default .Values.name }}
{{- else -}}
{{ .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* A config override as `dtrain train` reads it: strings as they are, anything else as JSON. */}}
{{- define "dtrain.overrideText" -}}
{{- if kindIs "string" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/* The training command's arguments: the recipe, then key=value overrides (run_dir on the shared volume). */}}
{{- define "dtrain.trainArgs" -}}
- {{ .Values.recipe | quote }}
{{- range $key, $value := .Values.overrides }}
- {{ printf "%v=%v" $key (include "dtrain.overrideText" $value) | quote }}
{{- end }}
{{- if not (hasKey .Values.overrides "run_dir") }}
- {{ printf "run_dir=%v/%v" .Values.runs.mountPath .Values.name | quote }}
{{- end }}
{{- end }}

{{- define "dtrain.mlflowUri" -}}
{{ printf "http://%v:%v" .Values.mlflow.name .Values.mlflow.port }}
{{- end }}

{{/* The pod every training node runs, shared by the PyTorchJob (Master/Worker) and the Indexed Job.
     Call with (dict "root" $ "container" NAME "port" PORT_NAME "env" DICT "subdomain" S "restartPolicy" P). */}}
{{- define "dtrain.pod" -}}
{{- $v := .root.Values -}}
metadata:
  labels:
    app.kubernetes.io/name: dtrain
    app.kubernetes.io/instance: {{ $v.name | quote }}
    app.kubernetes.io/component: training
    {{- with $v.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with .subdomain }}
  subdomain: {{ . | quote }}
  {{- end }}
  {{- with .restartPolicy }}
  restartPolicy: {{ . | quote }}
  {{- end }}
  # torchrun forwards SIGTERM to the training processes, which checkpoint at the next step boundary;
  # the kubelet waits this long before SIGKILL.
  terminationGracePeriodSeconds: {{ add $v.shutdownTimeoutSeconds 60 }}
  {{- with (include "dtrain.serviceAccountName" .root) }}
  serviceAccountName: {{ . | quote }}
  {{- end }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . | quote }}
  {{- end }}
  {{- with $v.schedulerName }}
  schedulerName: {{ . | quote }}
  {{- end }}
  {{- if $v.hostNetwork }}
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  securityContext:
    runAsNonRoot: true
    {{- toYaml $v.securityContext | nindent 4 }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .container | quote }}
      image: {{ $v.image | quote }}
      imagePullPolicy: {{ $v.imagePullPolicy | quote }}
      command: ["/opt/dtrain/launch/torchrun.sh"]
      args:
        {{- include "dtrain.trainArgs" .root | nindent 8 }}
      ports:
        - name: {{ .port | quote }}
          containerPort: {{ $v.rdzvPort }}
      {{- with $v.capabilities }}
      securityContext:
        capabilities:
          add:
            {{- toYaml . | nindent 12 }}
      {{- end }}
      env:
        {{- range $name, $value := .env }}
        - name: {{ $name | quote }}
          value: {{ $value | toString | quote }}
        {{- end }}
        - name: SHUTDOWN_TIMEOUT
          value: {{ $v.shutdownTimeoutSeconds | toString | quote }}
        - name: RDZV_JOIN_TIMEOUT
          value: {{ $v.rdzvJoinTimeoutSeconds | toString | quote }}
        {{- if $v.mlflow.enabled }}
        - name: MLFLOW_TRACKING_URI
          value: {{ include "dtrain.mlflowUri" .root | quote }}
        {{- end }}
        {{- range $name, $value := $v.env }}
        - name: {{ $name | quote }}
          value: {{ $value | toString | quote }}
        {{- end }}
      resources:
        requests:
          cpu: {{ $v.cpu | toString | quote }}
          memory: {{ $v.memory | toString | quote }}
          {{- if $v.gpusPerNode }}
          nvidia.com/gpu: {{ $v.gpusPerNode }}
          {{- end }}
          {{- range $name, $count := $v.extraResources }}
          {{ $name }}: {{ $count | toString | quote }}
          {{- end }}
        limits:
          memory: {{ $v.memory | toString | quote }}
          {{- if $v.gpusPerNode }}
          nvidia.com/gpu: {{ $v.gpusPerNode }}
          {{- end }}
          {{- range $name, $count := $v.extraResources }}
          {{ $name }}: {{ $count | toString | quote }}
          {{- end }}
      volumeMounts:
        - name: data
          mountPath: {{ $v.data.mountPath | quote }}
          readOnly: {{ $v.data.readOnly }}
        - name: runs
          mountPath: {{ $v.runs.mountPath | quote }}
        - name: dshm
          mountPath: /dev/shm
  volumes:
    - name: data
      persistentVolumeClaim:
        claimName: {{ $v.data.claimName | quote }}
        readOnly: {{ $v.data.readOnly }}
    - name: runs
      persistentVolumeClaim:
        claimName: {{ $v.runs.claimName | quote }}
    # Loader workers pass batches through shared memory; the container default (64 MiB) is too small.
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $v.shmSize | toString | quote }}
{{- end }}

{{- define "dtrain.jobMetadata" -}}
name: {{ .Values.name | quote }}
namespace: {{ include "dtrain.namespace" . | quote }}
labels:
  app.kubernetes.io/name: dtrain
  app.kubernetes.io/instance: {{ .Values.name | quote }}
  {{- with .Values.labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
