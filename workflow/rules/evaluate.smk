# Evaluation: retrain each run's best configuration and score it on the test set, then
# summarize the whole study.


rule evaluate_test:
    input:
        trials=lambda wc: STAGE.format(**wc, stage=last_stage(wc.strategy)) + "/trials.jsonl",
        data=lambda wc: prepared_file(wc.dataset, STUDY.ladder[-1]),
    output:
        test=f"{RUN}/test.json",
    log:
        f"{RUN}/evaluate_test.log",
    threads: SETTINGS.trainer.threads
    shell:
        "{IISHPO} evaluate-test --dataset {wildcards.dataset} --seed {wildcards.seed} "
        "--trials {input.trials} --data {input.data} --output {output.test} {OVERRIDE_ARGS} 2> {log}"


def all_runs(pattern):
    return [
        pattern.format(dataset=d, optimizer=o, strategy=s, seed=seed, stage=k)
        for d in STUDY.datasets
        for o in STUDY.optimizers
        for s in STUDY.strategies
        for seed in STUDY.seeds
        for k in range(last_stage(s) + 1)
    ]


rule summarize:
    input:
        tests=sorted(set(all_runs(RUN + "/test.json"))),
        stages=all_runs(STAGE + "/stage.json"),
    output:
        markdown=f"{RESULTS}/summary.md",
        table=f"{RESULTS}/summary.csv",
        runs=f"{RESULTS}/runs.csv",
        metrics=f"{RESULTS}/metrics.json",
        plot=f"{RESULTS}/progress.png",
        progress=[f"{RESULTS}/progress/{d}.csv" for d in STUDY.datasets],
    log:
        f"{RESULTS}/summarize.log",
    shell:
        "{IISHPO} summarize --results {RESULTS} {OVERRIDE_ARGS} > {log} 2>&1 && cat {output.markdown}"
