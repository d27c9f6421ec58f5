# Data: fetch the original files (download, generate or check), then resize them once
# to every resolution of the ladder.


rule fetch_dataset:
    output:
        marker=f"{RAW}/{{dataset}}/.fetched",
    params:
        config=lambda wc: digest(dataset_config(SETTINGS, wc.dataset)),
        raw_dir=lambda wc, output: Path(output.marker).parent,
        iishpo=IISHPO,
        overrides=OVERRIDE_ARGS,
    log:
        f"{RAW}/{{dataset}}/fetch.log",
    threads: LIGHT.threads
    resources:
        mem_mb=LIGHT.mem_mb,
        runtime=LIGHT.runtime,
    shell:
        "{params.iishpo} fetch --dataset {wildcards.dataset} --raw-dir {params.raw_dir} "
        "{params.overrides} 2> {log} && echo {params.config} > {output.marker}"


rule prepare_dataset:
    input:
        rules.fetch_dataset.output.marker,
    output:
        [f"{PREPARED}/{{dataset}}/{{color}}/{r}px.npz" for r in STUDY.ladder],
    params:
        config=lambda wc: digest(dataset_config(SETTINGS, wc.dataset)),
        raw_dir=lambda wc, input: Path(input[0]).parent,
        targets=lambda wc, output: " ".join(f"--output {r}={p}" for r, p in zip(STUDY.ladder, output)),
        iishpo=IISHPO,
        overrides=OVERRIDE_ARGS,
    log:
        f"{PREPARED}/{{dataset}}/{{color}}/prepare.log",
    threads: LIGHT.threads
    resources:
        mem_mb=LIGHT.mem_mb,
        runtime=LIGHT.runtime,
    shell:
        "{params.iishpo} prepare --dataset {wildcards.dataset} --raw-dir {params.raw_dir} "
        "{params.targets} {params.overrides} 2> {log}"
