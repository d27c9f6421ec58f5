# Data: fetch the original files (download, generate or check), then resize them once
# to every resolution of the ladder.


rule fetch_dataset:
    output:
        marker=f"{RAW}/{{dataset}}/.fetched",
    params:
        dataset_config=dataset_config,
        raw_dir=f"{RAW}/{{dataset}}",
    log:
        f"{RAW}/{{dataset}}/fetch.log",
    shell:
        "{IISHPO} fetch --dataset {wildcards.dataset} --raw-dir {params.raw_dir} "
        "{OVERRIDE_ARGS} 2> {log} && echo {params.dataset_config:q} > {output.marker}"


rule prepare_dataset:
    input:
        rules.fetch_dataset.output.marker,
    output:
        [f"{PREPARED}/{{dataset}}/{{color}}/{r}px.npz" for r in STUDY.ladder],
    params:
        raw_dir=f"{RAW}/{{dataset}}",
        targets=lambda wc, output: " ".join(f"--output {r}={p}" for r, p in zip(STUDY.ladder, output)),
    log:
        f"{PREPARED}/{{dataset}}/{{color}}/prepare.log",
    shell:
        "{IISHPO} prepare --dataset {wildcards.dataset} --raw-dir {params.raw_dir} "
        "{params.targets} {OVERRIDE_ARGS} 2> {log}"
