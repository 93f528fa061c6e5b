-- Runs once, when the PostgreSQL volume is first initialised (POSTGRES_DB=mlflow exists already):
-- the database that holds the Optuna studies of every sweep worker.
CREATE DATABASE optuna;
