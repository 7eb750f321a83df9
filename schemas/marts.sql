-- Analysis marts: the contract analysts query (cart_etl.load.marts writes them, the
-- invariants in cart_etl.load.marts.check_invariants hold after every run).
-- Times are TIMESTAMPTZ (UTC instants); study_day = local (site timezone) date - local
-- infusion date, so day 0 exists.

-- Grain: one row per screened patient (register row accepted). Columns are exactly those of
-- the synthetic cohort's truth/patients.csv (README "Truth columns and conventions") plus
-- person_id. NULL = not derivable (e.g. CRS grade of a patient never monitored).
CREATE TABLE IF NOT EXISTS marts.patient (
    person_id            BIGINT PRIMARY KEY,
    study_id             VARCHAR NOT NULL UNIQUE,
    is_infused           BOOLEAN NOT NULL,
    exclusion_reason     VARCHAR CHECK (exclusion_reason IN ('not_infused', 'followup_lt_28d', 'data_lost')),
    is_included          BOOLEAN NOT NULL,
    is_toci              BOOLEAN,
    age_years            INTEGER,
    sex                  VARCHAR,
    is_high_risk         BOOLEAN,
    lines_of_therapy     INTEGER,
    prior_allo_sct       BOOLEAN,
    marrow_blasts_pct    DOUBLE,
    cart_dose_1e6_per_kg DOUBLE,
    max_crs_grade        INTEGER,
    crs_onset_day        INTEGER,
    crs_duration_days    DOUBLE,
    has_icans            BOOLEAN,
    max_icans_grade      INTEGER,
    toci_doses           INTEGER,
    toci_cumulative_mg   DOUBLE,
    steroid_mp_equiv_mg  DOUBLE,
    response_day28       VARCHAR CHECK (response_day28 IN ('mrd_neg_cr', 'mrd_pos_cr', 'pr', 'nr')),
    os_days              INTEGER,
    os_event             BOOLEAN,
    pfs_days             INTEGER,
    pfs_event            BOOLEAN,
    serious_infection    BOOLEAN
);

-- Grain: one row per screened patient. Facts behind the figures beyond Table 2 (the
-- columns of truth/supplement.csv that a pipeline can derive, plus timing facts).
CREATE TABLE IF NOT EXISTS marts.patient_detail (
    person_id                  BIGINT PRIMARY KEY,
    study_id                   VARCHAR NOT NULL UNIQUE,
    infusion_at                TIMESTAMPTZ,
    infusion_date              DATE,          -- local calendar date of day 0
    last_contact_date          DATE,
    progression_date           DATE,
    death_date                 DATE,
    crs_episodes               INTEGER,       -- CRS episodes (onset day 0-14)
    crs_grade_recorded         INTEGER,       -- physician's max recorded grade (any scale)
    recorded_grade_disagrees   BOOLEAN,       -- recorded != derived ASTCT max grade
    crs_max_grade_mechanism    VARCHAR,       -- fever | hypotension | low_flow_o2 | high_flow_o2 | vasopressor | multiple_vasopressors | positive_pressure
    pre_infusion_fever         BOOLEAN,       -- a temperature >= 38.0 C on day 0 before the infusion
    first_toci_at              TIMESTAMPTZ,
    hours_onset_to_first_toci  DOUBLE,
    toci_max_doses_in_24h      INTEGER,
    toci_exceeds_course_limit  BOOLEAN,       -- > 3 doses in 24 h or > 4 in total (label)
    il6_before_first_toci      DOUBLE,        -- pg/mL, last sample before the first dose
    il6_after_first_toci       DOUBLE,        -- pg/mL, first sample 24-72 h after it
    il6_fell_after_toci        BOOLEAN,
    gcsf_total_ug              DOUBLE,
    vasopressor_hours          DOUBLE,
    lost_data_kind             VARCHAR CHECK (lost_data_kind IN ('monitoring', 'response', 'follow_up'))
);

-- Grain: one row per CRS-like febrile episode after infusion (episode_number 1.. per
-- patient, ordered by onset); is_crs = onset on study day 0-14.
CREATE TABLE IF NOT EXISTS marts.crs_episode (
    person_id                  BIGINT NOT NULL,
    study_id                   VARCHAR NOT NULL,
    episode_number             INTEGER NOT NULL,
    is_crs                     BOOLEAN NOT NULL,
    onset_at                   TIMESTAMPTZ NOT NULL,
    end_at                     TIMESTAMPTZ NOT NULL,
    onset_day                  INTEGER NOT NULL,
    end_day                    INTEGER NOT NULL,
    duration_hours             DOUBLE NOT NULL,
    duration_days              DOUBLE NOT NULL,
    max_grade                  INTEGER NOT NULL,
    grade_mechanism            VARCHAR NOT NULL,
    first_mask_at              TIMESTAMPTZ,   -- first tocilizumab/systemic steroid in the episode
    first_toci_at              TIMESTAMPTZ,
    hours_onset_to_first_toci  DOUBLE,
    PRIMARY KEY (person_id, episode_number)
);

-- Grain: one row per drug administration (bolus) or vasopressor infusion interval.
CREATE TABLE IF NOT EXISTS marts.treatment (
    person_id          BIGINT NOT NULL,
    study_id           VARCHAR NOT NULL,
    drug               VARCHAR NOT NULL,      -- canonical name (tocilizumab, dexamethasone, ...)
    drug_class         VARCHAR NOT NULL,      -- anti_il6 | corticosteroid | growth_factor | vasopressor
    route              VARCHAR,
    start_at           TIMESTAMPTZ NOT NULL,
    stop_at            TIMESTAMPTZ,           -- vasopressor infusions only
    study_day          INTEGER NOT NULL,
    dose_number        INTEGER NOT NULL,      -- 1.. per (patient, drug) in time order
    dose               DOUBLE,                -- normalised: mg (ug for G-CSF); NULL for infusions
    dose_unit          VARCHAR,
    dose_mg_per_kg     DOUBLE,
    rate               DOUBLE,                -- vasopressors
    rate_unit          VARCHAR,
    mp_equiv_mg        DOUBLE,                -- systemic corticosteroids only
    counts_for_steroid_total BOOLEAN NOT NULL, -- systemic (IV/PO) on study days 0-28
    exceeds_label_limit BOOLEAN NOT NULL,     -- tocilizumab > 800 mg per dose (label)
    indication         VARCHAR,
    source_file        VARCHAR NOT NULL,
    source_row         VARCHAR NOT NULL
);

-- Grain: one row per accepted measurement (labs and vital signs).
CREATE TABLE IF NOT EXISTS marts.lab_timeseries (
    person_id               BIGINT NOT NULL,
    study_id                VARCHAR NOT NULL,
    category                VARCHAR NOT NULL,  -- lab | vital
    item                    VARCHAR NOT NULL,  -- canonical item (il6, crp, temp, sbp, ...)
    measured_at             TIMESTAMPTZ NOT NULL,
    study_day               INTEGER,
    hours_since_infusion    DOUBLE,
    hours_from_first_toci   DOUBLE,
    value                   DOUBLE NOT NULL,
    unit                    VARCHAR NOT NULL,  -- UCUM, after conversion
    source_unit             VARCHAR,
    flag                    VARCHAR            -- high | low (clinical flag), NULL otherwise
);

-- Grain: one row per CONSORT box, in flow order (Figure 1).
CREATE TABLE IF NOT EXISTS marts.consort (
    step       INTEGER NOT NULL,
    box        VARCHAR NOT NULL,   -- screened | infused | excluded:<reason> | analysed | analysed:toci | analysed:no_toci
    patients   INTEGER NOT NULL
);
